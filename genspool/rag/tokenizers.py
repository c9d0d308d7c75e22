"""The tokenizer a store's chunks are cut by: its embedding model's own.

The bundled MiniLM's is its WordPiece vocabulary (the one its provider runs with, loaded from
the same package); a model whose tokenizer genspool cannot load (a remote one, the echo model)
is cut by words, which is what the echo model counts and a fair stand-in for a remote model.
"""

from __future__ import annotations

import functools
from typing import Any

from genspool.runtime.catalog import ModelCatalog

__all__ = ["tokenizer_of", "word_tokenizer"]


@functools.cache
def word_tokenizer() -> Any:
    """A tokenizer of words and punctuation (no vocabulary: every word is one token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@functools.cache
def _wordpiece() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from genspool.providers.onnx_embed import VOCAB

    tok = Tokenizer(models.WordPiece.from_file(str(VOCAB), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def tokenizer_of(catalog: ModelCatalog, model: str) -> Any:
    """The ``tokenizers.Tokenizer`` that cuts chunks for ``model``."""
    if catalog.config(model).provider == "onnx_embedding":
        return _wordpiece()
    return word_tokenizer()
