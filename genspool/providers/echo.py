"""A zero-latency model for benchmarks and tests, named as such: it computes nothing.

Chat requests get the last user message back as the answer; embedding requests get a fixed-size
vector derived from a hash of each input. ``latency_ms`` simulates the time one batch takes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, EMBEDDINGS, Provider, Request, Response
from genspool.providers.shapes import chat_completion, embedding_list

__all__ = ["EchoProvider"]


def _words(text: str) -> int:
    return max(1, len(text.split()))


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
        if url == CHAT:
            return sum(_words(str(m.get("content", ""))) for m in body.get("messages", []))
        inputs = body.get("input", "")
        return sum(_words(str(t)) for t in (inputs if isinstance(inputs, list) else [inputs]))

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
            prompt_tokens=self.count_tokens(CHAT, r.body) or 0,
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
            prompt_tokens=self.count_tokens(EMBEDDINGS, r.body) or 0,
            encoding_format=r.body.get("encoding_format", "float"),
        )
