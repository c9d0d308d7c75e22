"""The offset clock alone: how it measures, when it measures again, what it says.

The servers of the test machine share its clock and cannot fail on cue, so a fake server stands
in here (:class:`FakeServerTime`: a clock set some seconds off, that can be made to fail). That
the real backends' ``server_time`` is followed is in ``tests/contract``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from genspool.core.clock import ServerClock
from genspool.exceptions import BackendError


class FakeServerTime:
    """A fake server's clock: this machine's plus ``skew_s``; ``down`` makes it unreachable."""

    def __init__(self, skew_s: float, delay_s: float = 0.0) -> None:
        self.skew_s, self.delay_s, self.down, self.calls = skew_s, delay_s, False, 0

    async def __call__(self) -> float:
        self.calls += 1
        if self.down:
            raise BackendError("the fake server is down")
        await asyncio.sleep(self.delay_s)
        return time.time() + self.skew_s


def following(
    server: FakeServerTime, local_skew_s: float = 0.0, refresh_s: float = 3600.0
) -> ServerClock:
    clock = ServerClock(lambda: time.time() + local_skew_s + offset[0], refresh_s=refresh_s)
    clock.TICK_S = 0.01
    clock.follow(server, "the fake server")
    return clock


offset = [0.0]  # a local clock's step (an NTP step), for the jump test


@pytest.fixture(autouse=True)
def _steady() -> None:
    offset[0] = 0.0


async def test_it_reads_the_servers_time_from_the_local_clock() -> None:
    server = FakeServerTime(+42.0, delay_s=0.002)
    clock = following(server, local_skew_s=-3.0)
    assert await clock.sync() == pytest.approx(45.0, abs=0.01)
    assert clock() == pytest.approx(time.time() + 42.0, abs=0.01)
    assert server.calls == ServerClock.SAMPLES and 0 < clock.uncertainty < 0.01


async def test_it_keeps_its_offset_while_the_server_is_down_and_measures_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServerTime(+5.0)
    clock = following(server, refresh_s=0.02)
    caplog.set_level(logging.INFO, logger="genspool.clock")
    await clock.start()
    try:
        server.down, server.skew_s = True, +7.0  # a failover to a server 2 s further off
        await asyncio.sleep(0.1)
        assert clock.offset == pytest.approx(5.0, abs=0.01)  # the last one measured
        server.down = False
        await asyncio.sleep(0.05)
        assert clock.offset == pytest.approx(7.0, abs=0.01)
    finally:
        await clock.stop()
    assert any("cannot read the time" in r.getMessage() for r in caplog.records)


async def test_a_step_of_the_local_clock_is_measured_at_once() -> None:
    server = FakeServerTime(0.0)
    clock = following(server)
    await clock.start()
    try:
        offset[0] = -30.0  # someone set this machine's clock back 30 s
        await asyncio.sleep(0.05)
        assert clock() == pytest.approx(time.time(), abs=0.01)
    finally:
        await clock.stop()


async def test_a_clock_off_by_more_than_a_second_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="genspool.clock"):
        near = following(FakeServerTime(+0.2))
        await near.sync()
        assert not caplog.records
        far = following(FakeServerTime(-90.0))
        await far.sync()
        await far.sync()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "90.0" in record.getMessage() and "ahead of the clock of the fake server" in (
        record.getMessage()
    )
