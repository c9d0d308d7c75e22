"""The Signals role's contract: payloads broadcast by one connection reach the listeners of
every connection (when the backend carries events across processes), and a wake-up ends an
idle worker's wait at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from genspool.core.queue import Queue


async def test_broadcast_reaches_every_listener(make_queue: Callable[..., Queue]) -> None:
    a, b = make_queue(), make_queue()
    async with a, b:
        if not a.storage.signals.cross_process_events:
            return  # this backend's subscribers poll the store instead (see the facade tests)
        got: list[bytes] = []
        listener = asyncio.create_task(b.storage.signals.listen(got.append))
        try:
            async with asyncio.timeout(10):
                while b"hello" not in got:  # the listener may still be subscribing
                    await a.storage.signals.broadcast(b"hello")
                    await asyncio.sleep(0.1)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def test_notify_wakes_a_waiting_worker_at_once(queue: Queue) -> None:
    signals = queue.storage.signals
    await signals.wait_for_work("w", 0.0)  # forget earlier wake-ups
    waiter = asyncio.create_task(signals.wait_for_work("w", 5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    signals.notify("w")
    await asyncio.wait_for(waiter, 5.0)
    assert time.monotonic() - started < 1.0
