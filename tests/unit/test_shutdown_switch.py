"""The app's shutdown switch (:class:`genspool.api.shutdown.Shutdown`): push streams counted,
told to end, and waited for a bounded time. The process-level behaviour (signals, exit within
the bound, close frames on the wire) is tested on a real server in
tests/integration/test_shutdown.py."""

from __future__ import annotations

import asyncio
import time

from genspool.api.shutdown import Shutdown


async def test_begin_with_no_streams_returns_at_once_and_is_repeatable() -> None:
    shutdown = Shutdown()
    started = time.monotonic()
    await shutdown.begin()
    await shutdown.begin()
    assert shutdown.closing.is_set()
    assert time.monotonic() - started < 0.1


async def test_begin_waits_for_streams_to_end() -> None:
    shutdown = Shutdown(push_grace_s=5)
    ended: list[float] = []

    async def stream() -> None:
        with shutdown.push() as closing:
            await closing.wait()
            await asyncio.sleep(0.05)  # its last frame
        ended.append(time.monotonic())

    tasks = [asyncio.create_task(stream()) for _ in range(3)]
    await asyncio.sleep(0)
    assert shutdown.open_streams == 3
    await shutdown.begin()
    assert len(ended) == 3 and shutdown.open_streams == 0
    await asyncio.gather(*tasks)


async def test_begin_gives_up_on_a_stream_that_does_not_end_after_the_grace() -> None:
    shutdown = Shutdown(push_grace_s=0.1)
    stuck = asyncio.Event()

    async def stream() -> None:
        with shutdown.push():
            await stuck.wait()  # ignores the closing event

    task = asyncio.create_task(stream())
    await asyncio.sleep(0)
    started = time.monotonic()
    await shutdown.begin()
    assert 0.09 < time.monotonic() - started < 1
    assert shutdown.open_streams == 1
    stuck.set()
    await task
    assert shutdown.open_streams == 0
