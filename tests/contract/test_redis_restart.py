"""A Queue on Redis comes back by itself when the Redis server restarts.

The server keeps nothing on disk (``--save "" --appendonly no``), so the jobs stored before the
restart are gone after it: durability across a Redis restart needs the server's own AOF or RDB
persistence. What this checks is the process side. While the server is down, calls raise
BackendError with one line; once it is back, the same Queue object works again within a few
seconds without being rebuilt, ``listen`` has resubscribed so a broadcast sent after the
restart arrives, and the work channel wakes an idle worker again.

The server restarted is this session's own (the ``private_redis`` fixture: a ``redis-server`` on
a free port, stopped by its pid), never the shared one, whose keys are a user's. The test skips
when ``redis-server`` is not installed, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from genspool.backends import backend_from_url
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.exceptions import BackendError
from tests.contract._restarts import broadcast_arrives, eventually, work_wakes
from tests.helpers.servers import PrivateServer


def job(model: str = "m") -> Job:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Job(url="/v1/chat/completions", body=body, model=model)


@pytest.fixture
def backend_url(private_redis: PrivateServer) -> str:
    """A key prefix on the private server (the contract conftest's fixture runs every
    backend)."""
    return f"{private_redis.url}?prefix=gs_{uuid.uuid4().hex[:10]}"


async def test_queue_recovers_after_a_redis_restart(
    queue: Queue, backend_url: str, private_redis: PrivateServer
) -> None:
    other = Queue(backend_from_url(backend_url))
    await other.connect()
    got: list[bytes] = []
    listener = asyncio.create_task(queue.storage.signals.listen(got.append))
    queue.storage.signals.poll_interval_s = 30.0
    try:
        await queue.submit_many([job() for _ in range(5)])
        assert len(await queue.lease("m", 2)) == 2
        await broadcast_arrives(queue, got, "before")
        assert await work_wakes(queue, other, job) < 0.1

        await asyncio.to_thread(private_redis.stop)
        down_at = time.monotonic()
        try:
            await queue.submit(job())
            raise AssertionError("a call while the server is down must raise BackendError")
        except BackendError as exc:
            message = str(exc)
        assert "\n" not in message and f"127.0.0.1:{private_redis.port}" in message, message
        assert time.monotonic() - down_at < 5.0, "a call to a stopped server must fail fast"

        await asyncio.to_thread(private_redis.start)
        back_at = time.monotonic()
        stored = await eventually(lambda: queue.submit(job()))
        (leased,) = await eventually(lambda: queue.lease("m", 10))  # the rest died with it
        assert leased.id == stored.id and leased.status is JobStatus.RUNNING
        assert len(await queue.complete([(leased, {"status_code": 200, "body": {}})])) == 1
        assert time.monotonic() - back_at < 5.0, "the same Queue should work within seconds"

        await broadcast_arrives(queue, got, "after")
        assert await work_wakes(queue, other, job) < 0.1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await other.close()
