"""``Provider.start``: one future per request. A batch provider's futures resolve together from
one ``handle()`` call, which is cancelled once nobody waits for any of its answers; a
continuous provider gets one call per request. The echo model (named as such: it computes
nothing) is the batch provider; a stack of resilience layers around it must not change that."""

from __future__ import annotations

import asyncio
import time

from genspool.config import ModelConfig
from genspool.providers.base import CHAT, Request, continuous, max_sequences
from genspool.providers.echo import EchoProvider
from genspool.runtime import ModelRegistry


def asking(text: str) -> Request:
    return Request(CHAT, {"messages": [{"role": "user", "content": text}]})


class Counting(EchoProvider):
    """Echo that counts its calls and how many were cancelled."""

    calls = 0
    cancelled = 0

    async def handle(self, batch):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        try:
            return await super().handle(batch)
        except asyncio.CancelledError:
            type(self).cancelled += 1
            raise


async def test_a_batch_provider_answers_every_request_from_one_call() -> None:
    provider = Counting("echo", latency_ms=50)
    futures = provider.start([asking("one"), asking("two"), asking("three")])
    answers = await asyncio.gather(*futures)
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["one", "two", "three"]
    assert Counting.calls == 1 and not continuous(provider) and max_sequences(provider) is None


async def test_the_call_is_cancelled_when_no_future_is_awaited_any_more() -> None:
    Counting.calls = Counting.cancelled = 0
    provider = Counting("echo", latency_ms=10_000)
    futures = provider.start([asking("a"), asking("b")])
    await asyncio.sleep(0.01)
    futures[0].cancel()
    await asyncio.sleep(0.01)
    assert Counting.cancelled == 0  # one answer is still wanted
    started = time.monotonic()
    futures[1].cancel()
    await asyncio.sleep(0.01)
    assert Counting.cancelled == 1 and time.monotonic() - started < 1


async def test_a_stack_of_layers_keeps_the_providers_kind() -> None:
    registry = ModelRegistry([ModelConfig(name="e", provider="echo")])
    stack = registry.provider("e")
    assert not continuous(stack)
    [answer] = await asyncio.gather(*stack.start([asking("through the stack")]))
    assert answer["choices"][0]["message"]["content"] == "through the stack"
    await registry.aclose()
