"""The Coordination role's contract: slots of a model's concurrency and shared rate-limit
buckets, seen from two connections as two processes would have them, and the server's time,
which the queue facade's clock follows whatever the local clock says."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from genspool.core.clock import ServerClock
from genspool.core.queue import Queue
from genspool.testing.inprocess import FakeClock


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


class SkewedClock:
    """A fake local clock: this machine's time set ``skew_s`` wrong, as on a host whose NTP is
    off (the real servers here share this machine's clock, so only a fake can be off)."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s

    def __call__(self) -> float:
        return time.time() + self.skew_s


async def test_server_time_is_the_servers_clock(make_queue: Callable[..., Queue]) -> None:
    async with make_queue() as q:
        for _ in range(3):
            before = time.time()
            server = await q.storage.coordination.server_time()
            after = time.time()
            # every server of the test machine runs on its clock (NATS stamps to the µs)
            assert before - 0.01 <= server <= after + 0.01


async def test_the_queue_clock_is_the_servers_whatever_the_local_one(
    make_queue: Callable[..., Queue], caplog: pytest.LogCaptureFixture
) -> None:
    behind, ahead = ServerClock(SkewedClock(-10.0)), ServerClock(SkewedClock(+60.0))
    with caplog.at_level(logging.WARNING, logger="genspool.clock"):
        async with make_queue(clock=behind), make_queue(clock=ahead), make_queue() as plain:
            for clock in (behind, ahead, plain.clock):
                assert abs(clock() - time.time()) < 0.05
            assert abs(behind.offset - 10.0) < 0.05 and abs(ahead.offset + 60.0) < 0.05
            assert isinstance(plain.clock, ServerClock) and abs(plain.clock.offset) < 0.05
            await behind.sync()  # measured again: still said only once
    said = [r.getMessage() for r in caplog.records if r.name == "genspool.clock"]
    assert len(said) == 2, said
    assert "10.0" in said[0] and "behind" in said[0]
    assert "60.0" in said[1] and "ahead of" in said[1]


async def test_a_clock_of_its_own_is_used_as_it_is(make_queue: Callable[..., Queue]) -> None:
    fake = FakeClock(start=1_000.0)  # a test's clock, moved on purpose: never corrected
    async with make_queue(clock=fake) as q:
        assert q.clock is fake and q.clock() == 1_000.0
        fake.advance(5)
        assert q.clock() == 1_005.0
