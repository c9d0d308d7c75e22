"""What the server-restart tests share: waiting, retrying as a caller would, and checking that
events and wake-ups come back after a restart. The servers they restart are the session's own
(``private_*`` fixtures of ``tests/conftest.py``), never the shared ones."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.exceptions import BackendError

T = TypeVar("T")


async def eventually(call: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Retry ``call`` on BackendError, as a worker or API caller would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def broadcast_arrives(sender: Queue, got: list[bytes], tag: str) -> None:
    """Broadcast until one arrives (what is sent before the resubscription is dropped). The
    payloads are empty event batches (an origin tag, a space, a JSON list), which the Queue's
    own listener accepts and ignores."""
    deadline = time.monotonic() + 10.0
    while not any(p.startswith(tag.encode() + b" ") for p in got):
        assert time.monotonic() < deadline, f"no {tag!r} broadcast arrived in 10 s"
        with contextlib.suppress(BackendError):
            await sender.storage.signals.broadcast(tag.encode() + b" []")
        await asyncio.sleep(0.1)


async def work_wakes(q: Queue, other: Queue, job: Callable[[str], Job]) -> float:
    """Seconds from the end of an enqueue by another connection until it has woken ``q``'s
    idle lane (polling is turned off, so only the work channel can)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        waiter = asyncio.create_task(q.storage.signals.wait_for_work("w", 5.0))
        await asyncio.sleep(0.05)
        await eventually(lambda: other.submit(job("w")))
        enqueued = time.monotonic()
        try:
            await asyncio.wait_for(waiter, 0.5)
            return time.monotonic() - enqueued
        except TimeoutError:
            continue  # not resubscribed yet
    raise AssertionError("the work channel woke no waiting lane within 10 s")
