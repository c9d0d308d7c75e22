"""The base of every resilience layer: a provider that wraps another, like an httpx transport
wrapping a transport.

A layer serves what its inner provider serves and passes everything it does not change
(token counting, loading, closing, provider-specific attributes such as ``dimensions``)
straight through, so a stack of layers looks like the provider it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

from genspool.exceptions import ModelError
from genspool.providers.base import Provider, Request, Response

__all__ = ["Layer", "PerRequest", "Result", "find_layer"]

Result = Response | ModelError
L = TypeVar("L", bound="Layer")


class Layer(Provider):
    def __init__(self, inner: Provider) -> None:
        super().__init__(inner.model)
        self.inner = inner
        self.endpoints = inner.endpoints

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        return await self.inner.handle(batch)

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        return self.inner.count_tokens(url, body)

    async def load(self) -> None:
        await self.inner.load()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during construction or copying)
            raise AttributeError(name)
        return getattr(self.inner, name)


def find_layer(provider: Provider, kind: type[L]) -> L | None:
    """The first layer of type ``kind`` in a stack, walking inwards; None when absent."""
    while True:
        if isinstance(provider, kind):
            return provider
        if not isinstance(provider, Layer):
            return None
        provider = provider.inner


class PerRequest(Layer):
    """Runs each request of a batch as its own call, all concurrently.

    For providers whose batch is N independent calls anyway (HTTP): the layers below it then
    time out and retry one request at a time, so one hung request does not cost the others
    their answers. ``per_request`` makes :meth:`Provider.start` give each request of a batch
    its own task through the whole stack, so that cancelling one job aborts its call alone."""

    per_request = True

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        results = await asyncio.gather(*(self.inner.handle([r]) for r in batch))
        return [r[0] for r in results]
