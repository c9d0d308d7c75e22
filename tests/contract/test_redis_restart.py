"""A Queue on Redis comes back by itself when the Redis server restarts.

The test server keeps nothing on disk (``--save "" --appendonly no``), so the jobs stored before
the restart are gone after it: durability across a Redis restart needs the server's own AOF or
RDB persistence. What this checks is the process side. While the server is down, calls raise
BackendError with one line; once it is back, the same Queue object works again within a few
seconds without being rebuilt, ``listen`` has resubscribed so a broadcast sent after the
restart arrives, and the work channel wakes an idle worker again.

It restarts the server at 127.0.0.1:6379 with the command CI uses, so it runs only against that
server. Like the contract suite, it skips outside CI when the server is not there and fails in CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from genspool.backends import backend_from_url
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.exceptions import BackendError
from tests.contract._restarts import broadcast_arrives, eventually, run, wait_until, work_wakes

T = TypeVar("T")

URL = os.environ.get("GENSPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip
IN_CI = os.environ.get("CI") == "true"


def job(model: str = "m") -> Job:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Job(url="/v1/chat/completions", body=body, model=model)


@pytest.fixture
def backend_url() -> str:
    """Only Redis here (the contract conftest's fixture runs every backend)."""
    parts = urlsplit(URL)
    if (parts.hostname, parts.port or 6379) != ("127.0.0.1", 6379):
        pytest.skip(f"restarts only the local server at 127.0.0.1:6379, not {URL}")
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        if IN_CI:
            pytest.fail("redis-server and redis-cli are needed to restart the server")
        pytest.skip("redis-server or redis-cli is not installed")
    return f"{URL}?prefix=gs_{uuid.uuid4().hex[:10]}"


async def _up() -> bool:
    return (await run("redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping")).strip() == "PONG"


async def _stop_server() -> None:
    await run("redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave")

    async def down() -> bool:
        return not await _up()

    await wait_until(down, "the Redis server should stop")


async def _start_server() -> None:
    await run(*START)
    await wait_until(_up, "the Redis server should start")


@pytest.fixture
async def server_back() -> AsyncIterator[None]:
    """Whatever happens in the test, leave the server running for everyone else."""
    yield
    if not await _up():
        await _start_server()


async def test_queue_recovers_after_a_redis_restart(
    queue: Queue, backend_url: str, server_back: None
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

        await _stop_server()
        down_at = time.monotonic()
        try:
            await queue.submit(job())
            raise AssertionError("a call while the server is down must raise BackendError")
        except BackendError as exc:
            message = str(exc)
        assert "\n" not in message and "127.0.0.1:6379" in message, message
        assert time.monotonic() - down_at < 5.0, "a call to a stopped server must fail fast"

        await _start_server()
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
