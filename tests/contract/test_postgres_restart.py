"""PostgreSQL restarts under a running queue: calls made meanwhile fail with BackendError (and
nothing else), then the same Queue object works again, nothing stored is lost, and its
cross-process listener reconnects by itself.

The server restarted is this session's own (the ``private_postgres`` fixture: a cluster in a
temporary directory on a free port, stopped with a fast shutdown by its pid and started again),
never the shared one. The test skips when PostgreSQL's programs are not installed, and fails
under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from genspool.backends import backend_from_url
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.exceptions import BackendError
from tests.helpers.servers import PrivateServer

T = TypeVar("T")

CHAT = "/v1/chat/completions"
RESULT = {"status_code": 200, "body": {"object": "chat.completion", "choices": []}}


@pytest.fixture
def backend_url(private_postgres: PrivateServer) -> str:
    """A schema on the private server (overrides the suite's fixture, which runs every
    backend); the suite's autouse fixture checks the server first and drops the schema
    afterwards."""
    return f"{private_postgres.url}?schema=gs_{uuid.uuid4().hex[:10]}"


def job(text: str = "hi") -> Job:
    return Job(url=CHAT, body={"model": "m", "messages": [{"content": text}]}, model="m")


async def eventually(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """What a caller does while the server comes back: retry BackendError with backoff."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return await call()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def hammer(q: Queue, stop: asyncio.Event, errors: list[BaseException]) -> None:
    """Keep calling the backend through the restart, recording every failure."""
    while not stop.is_set():
        try:
            await q.depth()
        except Exception as exc:
            errors.append(exc)
        await asyncio.sleep(0.02)


async def test_queue_recovers_after_a_server_restart(
    backend_url: str, private_postgres: PrivateServer
) -> None:
    retry = RetryPolicy(base_s=0.05, cap_s=0.2)
    q = Queue(backend_from_url(backend_url), retry=retry, lease_s=30.0)
    other = Queue(backend_from_url(backend_url), retry=retry)  # another process, in effect
    async with q, other:
        await _restart_mid_run(q, other, private_postgres)


async def _restart_mid_run(q: Queue, other: Queue, server: PrivateServer) -> None:
    before = await q.submit_many([job(f"before {i}") for i in range(5)])
    (held,) = await q.lease("m", 1)

    stop, errors = asyncio.Event(), list[BaseException]()
    load = asyncio.create_task(hammer(q, stop, errors))
    await asyncio.to_thread(server.restart)
    await eventually(q.depth)
    stop.set()
    await load
    assert all(isinstance(e, BackendError) for e in errors), errors
    assert all("\n" not in str(e) for e in errors), "BackendError messages are one line"

    # The same Queue object works again once the server is back.
    after = await eventually(lambda: q.submit(job("after")))
    leased = await eventually(lambda: q.lease("m", 10))
    assert {j.id for j in leased} == {j.id for j in before if j.id != held.id} | {after.id}
    done = await eventually(lambda: q.complete([(j, RESULT) for j in leased]))
    assert len(done) == len(leased)
    # What was stored before the restart is still there, lease included.
    kept = await eventually(lambda: q.get(held.id))
    assert kept.status is JobStatus.RUNNING and kept.lease_token == held.lease_token
    assert len(await q.complete([(held, RESULT)])) == 1

    # The listener reconnected: an event that another connection broadcasts now arrives, and
    # work that another connection enqueues wakes an idle worker at once (not at its poll).
    await _broadcast_arrives(q, other)
    signals = q.storage.signals
    await signals.wait_for_work("m", 0.0)  # forget earlier wake-ups
    waiter = asyncio.create_task(signals.wait_for_work("m", 5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await other.submit(job("wake up"))
    await waiter
    assert time.monotonic() - started < 0.5


async def _broadcast_arrives(q: Queue, other: Queue) -> None:
    sent: set[str] = set()
    with q.events.subscribe(None) as sub:
        async with asyncio.timeout(30):
            while True:
                stored = await eventually(lambda: other.submit(job("from elsewhere")))
                sent.add(stored.id)
                try:
                    event = await asyncio.wait_for(sub.queue.get(), 1.0)
                except TimeoutError:
                    continue  # broadcast while the listener was still reconnecting: again
                if event.id in sent:
                    return
