"""A split deployment (queue on Redis or NATS, store on SQLite or PostgreSQL) converges after a
restart of the queue's server during submissions (issue 14, item 7: 7 of ~380 jobs stayed
unfinished and list disagreed with get).

The queue's server is this session's own (``private_redis``, ``private_nats``). The Redis keeps
nothing on disk: the restart loses every job the queue held, and maintenance puts the store's
back. The NATS keeps its streams on disk: the restart cuts writes off between the queue and the
store. Either way every submission that was answered must still run to its end, and the store,
``get`` and ``list`` must agree on every job afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import pytest

from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter
from genspool.exceptions import BackendError
from tests.contract._restarts import eventually
from tests.helpers.servers import PrivateServer


def job(n: int) -> Job:
    body = {"model": "m", "messages": [{"role": "user", "content": f"hi {n}"}]}
    return Job(url="/v1/chat/completions", body=body, model="m")


@pytest.fixture(params=["redis", "nats"])
def server(request: pytest.FixtureRequest) -> PrivateServer:
    """The queue's server, the session's own."""
    found: PrivateServer = request.getfixturevalue(f"private_{request.param}")
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(
    request: pytest.FixtureRequest, server: PrivateServer, namespaced_url: Callable[[str], str]
) -> str:
    """The store on the shared SQLite or PostgreSQL, the queue on the private server (the
    contract conftest opens a ``store queue`` URL pair as a split deployment)."""
    store = namespaced_url(request.param)
    return f"{store} {server.url}?prefix=gs_{uuid.uuid4().hex[:10]}"


async def submit_until(queue: Queue, stop: asyncio.Event, accepted: list[Job]) -> int:
    """Submit jobs one at a time until ``stop``; the ones answered go to ``accepted``."""
    refused, n = 0, 0
    while not stop.is_set():
        n += 1
        try:
            accepted.append(await queue.submit(job(n)))
        except BackendError:
            refused += 1
            await asyncio.sleep(0.01)
    return refused


async def test_every_accepted_job_ends_after_a_restart_during_submissions(
    queue: Queue, server: PrivateServer
) -> None:
    await queue.maintain()  # the store has seen the queue's first epoch
    accepted: list[Job] = []
    stop = asyncio.Event()
    submitting = asyncio.create_task(submit_until(queue, stop, accepted))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(server.restart)
    await asyncio.sleep(0.3)
    stop.set()
    await submitting
    assert len(accepted) > 20

    await eventually(queue.maintain)
    assert queue.mirror is not None
    if server.name == "redis":
        assert queue.mirror.last["restored"] > 0  # the jobs the restart wiped came back
    deadline = time.monotonic() + 30.0
    while leased := await eventually(lambda: queue.lease("m", 100)):
        await queue.complete([(j, {"status_code": 200, "body": {}}) for j in leased])
        assert time.monotonic() < deadline
    with contextlib.suppress(BackendError):
        await queue.maintain()

    ids = [j.id for j in accepted]
    got = {i: (await queue.get(i)).status for i in ids}
    assert set(got.values()) == {JobStatus.SUCCEEDED}, got
    stored = {j.id: j.status for j in await queue.storage.store.get_many(ids)}
    listed = await queue.list_jobs(JobFilter(limit=len(ids) + 10))
    assert stored == got
    assert {j.id: j.status for j in listed if j.id in got} == got
