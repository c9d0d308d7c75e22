"""A zero-latency model for benchmarks and tests, named as such: it computes nothing.

Chat requests get the last user message back as the answer; embedding requests get a fixed-size
vector derived from a hash of each input. ``options.latency_ms`` simulates the time one batch
takes. Tokens are words here, so its model card counts them without any tokenizer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, EMBEDDINGS, Provider, Request, Response
from genspool.providers.plugins import (
    ModelCard,
    ModelSpec,
    ProviderOptions,
    ProviderPlugin,
    options_of,
)
from genspool.providers.shapes import chat_completion, embedding_list

__all__ = ["EchoOptions", "EchoProvider", "count_words", "plugin"]


def _words(text: str) -> int:
    return max(1, len(text.split()))


def count_words(url: str, body: dict[str, Any]) -> list[int]:
    """Words of the prompt (chat) or of each input (embeddings): the echo model's tokens."""
    if url == CHAT:
        return [sum(_words(str(m.get("content", ""))) for m in body.get("messages", []))]
    inputs = body.get("input", "")
    return [_words(str(t)) for t in (inputs if isinstance(inputs, list) else [inputs])]


class EchoProvider(Provider):
    endpoints = frozenset({CHAT, EMBEDDINGS})

    def __init__(self, model: str, *, latency_ms: float = 0.0, dimensions: int = 8) -> None:
        super().__init__(model)
        self.latency_s = latency_ms / 1000
        self.dimensions = dimensions

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return [self._chat(r) if r.url == CHAT else self._embed(r) for r in batch]

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        return sum(count_words(url, body))

    def _chat(self, r: Request) -> Response:
        messages = r.body.get("messages") or [{}]
        content = str(messages[-1].get("content", ""))
        if r.on_token is not None:
            words = content.split(" ")
            for i, word in enumerate(words):
                r.on_token(word if i == len(words) - 1 else word + " ")
        return chat_completion(
            self.model,
            content,
            prompt_tokens=r.prompt_tokens or sum(count_words(CHAT, r.body)),
            completion_tokens=_words(content),
            finish_reason="stop",
        )

    def _embed(self, r: Request) -> Response:
        inputs = r.body.get("input", "")
        texts = inputs if isinstance(inputs, list) else [inputs]
        vectors = [
            [
                b / 255
                for b in hashlib.blake2b(str(t).encode(), digest_size=self.dimensions).digest()
            ]
            for t in texts
        ]
        return embedding_list(
            self.model,
            vectors,
            prompt_tokens=r.prompt_tokens or sum(count_words(EMBEDDINGS, r.body)),
            encoding_format=r.body.get("encoding_format", "float"),
        )


class EchoOptions(ProviderOptions):
    latency_ms: float = Field(0.0, ge=0, description="Simulated time per batch.")
    dimensions: int = Field(8, gt=0, le=64, description="Size of the embedding vectors.")


def _create(config: ModelSpec, env: Mapping[str, str]) -> EchoProvider:
    opts = options_of(config, EchoOptions)
    return EchoProvider(config.name, latency_ms=opts.latency_ms, dimensions=opts.dimensions)


def _card(config: ModelSpec) -> ModelCard:
    dimensions = options_of(config, EchoOptions).dimensions
    return ModelCard(
        config.name, plugin.served(config), config.context_window, count_words, dimensions
    )


plugin = ProviderPlugin(
    name="echo",
    options=EchoOptions,
    endpoints=EchoProvider.endpoints,
    create=_create,
    card=_card,
)
