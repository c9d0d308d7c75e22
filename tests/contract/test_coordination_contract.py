"""The Coordination role's contract: slots of a model's concurrency and shared rate-limit
buckets, seen from two connections as two processes would have them."""

from __future__ import annotations

import time
from collections.abc import Callable

from genspool.core.queue import Queue


async def test_slots_are_limited_shared_and_expire(make_queue: Callable[..., Queue]) -> None:
    a, b = make_queue(), make_queue()  # two connections, as two processes would have
    async with a, b:
        ca, cb = a.storage.coordination, b.storage.coordination
        t = time.time()
        assert await ca.acquire_slot("model:m", "w1", 2, 0.3, t)
        assert await cb.acquire_slot("model:m", "w2", 2, 0.3, t)
        assert not await cb.acquire_slot("model:m", "w3", 2, 0.3, t)
        assert await ca.acquire_slot("model:m", "w1", 2, 0.3, t)  # a holder renews
        assert await ca.acquire_slot("model:other", "w3", 2, 0.3, t)
        await ca.release_slot("model:m", "w1")
        assert await cb.acquire_slot("model:m", "w3", 2, 0.3, t)
        # w2 and w3 stop renewing (their worker died): their slots come back after the ttl
        assert not await ca.acquire_slot("model:m", "w4", 2, 0.3, time.time())
        assert await ca.acquire_slot("model:m", "w4", 2, 0.3, time.time() + 0.5)


async def test_reserve_is_a_shared_rate_limit(make_queue: Callable[..., Queue]) -> None:
    a, b = make_queue(), make_queue()
    async with a, b:
        ca, cb = a.storage.coordination, b.storage.coordination
        t = 1_000.0
        waits = [await (ca, cb)[i % 2].reserve("rpm:m", 1, 10.0, 3, t) for i in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0] and abs(waits[3] - 0.1) < 1e-6
        assert await cb.reserve("rpm:m", 1, 10.0, 3, t + 0.1) == 0.0
        assert await ca.reserve("rpm:other", 1, 10.0, 3, t) == 0.0
        # a cost above the burst waits for a full bucket instead of failing forever
        assert await ca.reserve("tpm:m", 50, 10.0, 20, t) == 0.0
        assert await ca.reserve("tpm:m", 1, 10.0, 20, t) > 2.9
