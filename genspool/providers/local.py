"""The plugins of the two bundled local models: their ``options:``, cards and factories.

Kept apart from :mod:`genspool.providers.llama` and :mod:`genspool.providers.onnx_embed` so that
validating a models file imports neither llama.cpp nor onnxruntime: those modules (the
``local`` extra) are imported when a provider or a card's token counter is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from genspool.providers.base import CHAT, EMBEDDINGS, Provider
from genspool.providers.plugins import (
    ModelCard,
    ModelSpec,
    ProviderOptions,
    ProviderPlugin,
    options_of,
)

__all__ = ["LlamaOptions", "OnnxOptions", "llama_plugin", "onnx_plugin"]

#: all-MiniLM-L6-v2's size of vectors.
MINILM_DIMENSIONS = 384


class LlamaOptions(ProviderOptions):
    model_path: str | None = Field(None, description="GGUF weights; default the bundled SmolLM2.")
    threads: int | None = Field(None, gt=0, description="CPU threads; default physical cores.")
    cache_dir: str | None = Field(None, description="Where the Q8_0 copy of the bundled model is.")


class OnnxOptions(ProviderOptions):
    model_path: str | None = Field(None, description="ONNX graph; default the bundled MiniLM.")
    threads: int | None = Field(None, gt=0, description="onnxruntime intra-op threads.")


def _llama(config: ModelSpec, env: Mapping[str, str]) -> Provider:
    from genspool.providers.llama import LlamaChatProvider

    opts = options_of(config, LlamaOptions)
    return LlamaChatProvider(
        config.name,
        model_path=opts.model_path,
        context_window=config.context_window,
        max_batch_size=config.batching.max_batch_size,
        threads=opts.threads,
        cache_dir=opts.cache_dir,
    )


def _llama_card(config: ModelSpec) -> ModelCard:
    from genspool.providers.llama import PromptCounter
    from genspool.providers.llama_output import LLAMA_FEATURES, check_body

    path = options_of(config, LlamaOptions).model_path
    counter = PromptCounter(Path(path).expanduser() if path else None)
    served = llama_plugin.served(config)
    return ModelCard(
        config.name,
        served,
        config.context_window,
        counter,
        close=counter.close,
        features=LLAMA_FEATURES,
        check=check_body,
    )


def _onnx(config: ModelSpec, env: Mapping[str, str]) -> Provider:
    from genspool.providers.onnx_embed import OnnxEmbeddingProvider

    opts = options_of(config, OnnxOptions)
    return OnnxEmbeddingProvider(config.name, model_path=opts.model_path, threads=opts.threads)


def _onnx_card(config: ModelSpec) -> ModelCard:
    from genspool.providers.onnx_embed import TextCounter

    served = onnx_plugin.served(config)
    return ModelCard(config.name, served, config.context_window, TextCounter(), MINILM_DIMENSIONS)


llama_plugin = ProviderPlugin(
    name="llama_cpp",
    options=LlamaOptions,
    endpoints=frozenset({CHAT}),
    create=_llama,
    card=_llama_card,
    extra="local",
)

onnx_plugin = ProviderPlugin(
    name="onnx_embedding",
    options=OnnxOptions,
    endpoints=frozenset({EMBEDDINGS}),
    create=_onnx,
    card=_onnx_card,
    extra="local",
)
