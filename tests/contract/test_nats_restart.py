"""A Queue on NATS comes back by itself when the NATS server restarts, and loses nothing.

The server runs with JetStream file storage (``-js -sd``), so the jobs, leases, idempotency
keys and small values stored before the restart are all there after it. What this checks:
while the server is down, calls raise BackendError with one line, fast; once it is back, the
same Queue object works again within seconds without being rebuilt; the leases taken before
the restart are still held (their results are accepted) and the jobs left waiting can be
leased; ``listen`` has resubscribed, so a broadcast sent after the restart arrives; and the
wake-up subject wakes an idle worker again.

It restarts the server at 127.0.0.1:4222: it stops the process that listens on that port (by
its pid) and starts it again with the command CI uses, so it runs only against that server.
Like the contract suite, it skips outside CI when the server is not there and fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from genspool.backends import backend_from_url
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.exceptions import BackendError
from tests.contract._restarts import broadcast_arrives, eventually, run, wait_until, work_wakes

T = TypeVar("T")

URL = os.environ.get("GENSPOOL_TEST_NATS_URL", "nats://127.0.0.1:4222")
SERVER = "/usr/sbin/nats-server"
START = [
    "start-stop-daemon", "--start", "--oknodo", "--background", "--exec", SERVER, "--",
    "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server",
    "-l", "/var/log/nats-server.log",
]  # fmt: skip
IN_CI = os.environ.get("CI") == "true"
RESULT: dict[str, Any] = {"status_code": 200, "body": {"object": "chat.completion"}}


def job(model: str = "m", **kw: Any) -> Job:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Job(url="/v1/chat/completions", body=body, model=model, **kw)


@pytest.fixture
def backend_url() -> str:
    """Only NATS here (the contract conftest's fixture runs every backend)."""
    parts = urlsplit(URL)
    if (parts.hostname, parts.port or 4222) != ("127.0.0.1", 4222):
        pytest.skip(f"restarts only the local server at 127.0.0.1:4222, not {URL}")
    if not (os.path.exists(SERVER) and shutil.which("start-stop-daemon") and shutil.which("ss")):
        if IN_CI:
            pytest.fail(f"{SERVER}, start-stop-daemon and ss are needed to restart the server")
        pytest.skip("nats-server, start-stop-daemon or ss is not installed")
    return f"{URL}?prefix=gs_{uuid.uuid4().hex[:10]}"


async def _server_pid() -> int | None:
    """The pid of the process listening on 127.0.0.1:4222, if any."""
    found = re.search(r"pid=(\d+)", await run("ss", "-Hltnp", "sport = :4222"))
    return int(found.group(1)) if found else None


async def _up() -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", 4222)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _stop_server() -> None:
    pid = await _server_pid()
    assert pid is not None, "no process listens on 127.0.0.1:4222"
    os.kill(pid, signal.SIGTERM)  # a clean shutdown: JetStream writes its state out

    async def gone() -> bool:  # exited, not only closed its port (start would find it alive)
        return not await asyncio.to_thread(os.path.exists, f"/proc/{pid}")

    await wait_until(gone, "the NATS server should stop")


async def _start_server() -> None:
    await run(*START)
    await wait_until(_up, "the NATS server should start")


@pytest.fixture
async def server_back() -> AsyncIterator[None]:
    """Whatever happens in the test, leave the server running for everyone else."""
    yield
    if not await _up():
        await _start_server()


async def test_queue_recovers_after_a_nats_restart(
    queue: Queue, backend_url: str, server_back: None
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

        await _stop_server()
        down_at = time.monotonic()
        try:
            await queue.submit(job())
            raise AssertionError("a call while the server is down must raise BackendError")
        except BackendError as exc:
            message = str(exc)
        assert "\n" not in message and "127.0.0.1:4222" in message, message
        assert time.monotonic() - down_at < 5.0, "a call to a stopped server must fail fast"

        await _start_server()
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
