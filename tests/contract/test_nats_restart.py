"""A Queue on NATS comes back by itself when the NATS server restarts, and loses nothing.

The server runs with JetStream file storage (``-js -sd``), so the jobs, leases, idempotency
keys and small values stored before the restart are all there after it. What this checks:
while the server is down, calls raise BackendError with one line, fast; once it is back, the
same Queue object works again within seconds without being rebuilt; the leases taken before
the restart are still held (their results are accepted) and the jobs left waiting can be
leased; ``listen`` has resubscribed, so a broadcast sent after the restart arrives; and the
wake-up subject wakes an idle worker again.

The server restarted is this session's own (the ``private_nats`` fixture: a ``nats-server`` on a
free port with its store in a temporary directory, stopped by its pid with SIGTERM, a clean
shutdown in which JetStream writes its state out), never the shared one on 4222. The test skips
when ``nats-server`` is not installed, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from genspool.backends import backend_from_url
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.exceptions import BackendError
from tests.contract._restarts import broadcast_arrives, eventually, work_wakes
from tests.helpers.servers import PrivateServer

RESULT: dict[str, Any] = {"status_code": 200, "body": {"object": "chat.completion"}}


def job(model: str = "m", **kw: Any) -> Job:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Job(url="/v1/chat/completions", body=body, model=model, **kw)


@pytest.fixture
def backend_url(private_nats: PrivateServer) -> str:
    """A prefix of streams and buckets on the private server (the contract conftest's fixture
    runs every backend)."""
    return f"{private_nats.url}?prefix=gs_{uuid.uuid4().hex[:10]}"


async def test_queue_recovers_after_a_nats_restart(
    queue: Queue, backend_url: str, private_nats: PrivateServer
) -> None:
    other = Queue(backend_from_url(backend_url))
    await other.connect()
    got: list[bytes] = []
    listener = asyncio.create_task(queue.storage.signals.listen(got.append))
    queue.storage.signals.poll_interval_s = 30.0
    try:
        keyed = await queue.submit(job(idempotency_key="k1"))
        waiting = await queue.submit_many([job(priority=i % 2) for i in range(4)])
        ids = {keyed.id, *(j.id for j in waiting)}
        leased = await queue.lease("m", 2)
        assert len(leased) == 2
        await queue.storage.kv.kv_put("keys", "k", b"value")
        await broadcast_arrives(other, got, "before")
        assert await work_wakes(queue, other, job) < 0.1

        await asyncio.to_thread(private_nats.stop)
        down_at = time.monotonic()
        try:
            await queue.submit(job())
            raise AssertionError("a call while the server is down must raise BackendError")
        except BackendError as exc:
            message = str(exc)
        assert "\n" not in message and f"127.0.0.1:{private_nats.port}" in message, message
        assert time.monotonic() - down_at < 5.0, "a call to a stopped server must fail fast"

        await asyncio.to_thread(private_nats.start)
        back_at = time.monotonic()
        # Nothing stored before the restart is lost: records, leases, keys, small values.
        found = await eventually(lambda: queue.storage.queue.get_many(list(ids)))
        stored = {j.id: j for j in found}
        assert set(stored) == ids
        running = {i for i, j in stored.items() if j.status is JobStatus.RUNNING}
        assert running == {j.id for j in leased}
        assert (await eventually(lambda: queue.submit(job(idempotency_key="k1")))).id == keyed.id
        assert await queue.storage.kv.kv_get("keys", "k") == b"value"
        assert len(await queue.complete([(j, RESULT) for j in leased])) == 2
        rest = await eventually(lambda: queue.lease("m", 10))
        assert {j.id for j in rest} == ids - running
        assert [j.priority for j in rest] == sorted((j.priority for j in rest), reverse=True)
        assert len(await queue.complete([(j, RESULT) for j in rest])) == len(rest)
        assert time.monotonic() - back_at < 10.0, "the same Queue should work within seconds"

        await broadcast_arrives(other, got, "after")
        assert await work_wakes(queue, other, job) < 0.1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await other.close()
