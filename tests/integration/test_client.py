"""genspool.Client and genspool.AsyncClient against a real ``genspool serve`` process (echo
models, named as such: they compute nothing): submit → subscribe → result, cancel, a dead
letter and its replay, 1,000 jobs listed across pages, and API keys with the auth errors."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from genspool import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    JobStatus,
    NotFound,
    Unauthorized,
)
from tests.helpers.api import DOOMED_AT_ONCE, slow_model
from tests.helpers.processes import Server, Spawner

MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    slow_model(1000),
    DOOMED_AT_ONCE,
    {"name": "bulk-sync", "provider": "echo"},
    {"name": "bulk-async", "provider": "echo"},
]
BULK = 1000
PAGE = 97  # not a divisor of BULK: the last page is a short one


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, env={"GENSPOOL_RETRY_BASE_S": "0.05"})


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=30) as c:
        yield c


@pytest.fixture
async def aclient(server: Server) -> Any:
    async with AsyncClient(server.url, timeout=30) as c:
        yield c


def counting(requests: list[httpx.Request]) -> dict[str, Any]:
    """Event hooks that record each request (to count the pages a listing fetched)."""
    return {"request": [requests.append]}


# -- the blocking client -------------------------------------------------------------------------


def test_submit_subscribe_result(client: Client) -> None:
    jobs = [client.submit_chat("echo", chat(f"hello {i}"), metadata={"n": i}) for i in range(3)]
    with client.subscribe([j.id for j in jobs[:2]]) as sub:
        sub.add([jobs[2].id])
        events = list(sub)
    final = {e.id: e for e in events if e.ends}
    assert set(final) == {j.id for j in jobs}
    for i, j in enumerate(jobs):
        result = final[j.id].result
        assert final[j.id].status is JobStatus.SUCCEEDED
        assert result is not None and result.text == f"hello {i}"
        done = client.wait(j.id, timeout=15)
        assert done.metadata["n"] == i
        assert done.result is not None and done.result.text == f"hello {i}"


def test_events_of_one_job(client: Client) -> None:
    job = client.submit_chat("echo", chat("one two three"))
    with client.events(job.id) as events:
        states = [e.status for e in events if e.delta is None]
    assert states[-1] == JobStatus.SUCCEEDED


def test_cancel(client: Client, server: Server) -> None:
    blocker = client.submit_chat("slow", chat("blocker"))
    server.wait(blocker.id, until={"running"})
    queued = client.submit_chat("slow", chat("to cancel"))
    assert client.cancel(queued.id).status is JobStatus.CANCELLED
    assert client.wait(queued.id, timeout=5).status is JobStatus.CANCELLED
    with pytest.raises(Conflict):
        client.cancel(queued.id)
    with pytest.raises(NotFound):
        client.get("job_nope")


def test_dead_letter_and_replay(client: Client) -> None:
    job = client.submit_chat("doomed", chat("dead letter"))
    dead = client.wait(job.id, timeout=15)
    assert dead.status is JobStatus.FAILED
    assert dead.error is not None and dead.error.code == "model_timeout"
    assert job.id in {j.id for j in client.dead_letters(model="doomed")}
    assert client.replay(job.id).status is JobStatus.QUEUED
    assert client.wait(job.id, timeout=15).status is JobStatus.FAILED  # re-run, failed again
    ok = client.submit_chat("echo", chat("alive"))
    client.wait(ok.id, timeout=15)
    with pytest.raises(Conflict):
        client.replay(ok.id)


def test_list_a_thousand_jobs_across_pages(server: Server) -> None:
    requests: list[httpx.Request] = []
    http = httpx.Client(timeout=30, event_hooks=counting(requests))
    with Client(server.url, http_client=http) as client, ThreadPoolExecutor(16) as pool:
        submitted = list(
            pool.map(lambda i: client.submit_chat("bulk-sync", chat(f"n{i}")).id, range(BULK))
        )
        requests.clear()
        listed = [j.id for j in client.list(model="bulk-sync", limit=PAGE)]
    http.close()
    assert len(listed) == BULK
    assert set(listed) == set(submitted)
    assert listed == sorted(listed, reverse=True), "newest first"
    assert len(requests) == math.ceil(BULK / PAGE)


def test_models(client: Client) -> None:
    models = {m.id: m for m in client.models()}
    assert set(models) == {m["name"] for m in MODELS}
    assert "/v1/chat/completions" in models["echo"].endpoints


# -- the asyncio client --------------------------------------------------------------------------


async def test_async_submit_subscribe_result(aclient: AsyncClient) -> None:
    jobs = [await aclient.submit_chat("echo", chat(f"async {i}")) for i in range(3)]
    async with aclient.subscribe([jobs[0].id]) as sub:
        await sub.add(j.id for j in jobs[1:])
        events = [e async for e in sub]
    final = {e.id: e for e in events if e.ends}
    assert set(final) == {j.id for j in jobs}
    for i, j in enumerate(jobs):
        result = final[j.id].result
        assert result is not None and result.text == f"async {i}"
    done = await aclient.wait(jobs[0].id, timeout=15)
    assert done.status is JobStatus.SUCCEEDED


async def test_async_cancel(aclient: AsyncClient, server: Server) -> None:
    blocker = await aclient.submit_chat("slow", chat("async blocker"))
    await asyncio.to_thread(server.wait, blocker.id, {"running"})
    queued = await aclient.submit_chat("slow", chat("async cancel"))
    assert (await aclient.cancel(queued.id)).status is JobStatus.CANCELLED
    with pytest.raises(Conflict):
        await aclient.cancel(queued.id)


async def test_async_dead_letter_and_replay(aclient: AsyncClient) -> None:
    job = await aclient.submit_chat("doomed", chat("async dead letter"))
    async with await aclient.events(job.id) as events:
        last = [e async for e in events][-1]
    assert last.status is JobStatus.FAILED
    assert job.id in {j.id async for j in aclient.dead_letters(model="doomed", limit=5)}
    assert (await aclient.replay(job.id)).status is JobStatus.QUEUED
    assert (await aclient.wait(job.id, timeout=15)).status is JobStatus.FAILED


async def test_async_list_a_thousand_jobs_across_pages(server: Server) -> None:
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    http = httpx.AsyncClient(timeout=30, event_hooks={"request": [count]})
    async with AsyncClient(server.url, http_client=http) as client:
        gate = asyncio.Semaphore(32)

        async def submit(i: int) -> str:
            async with gate:
                return (await client.submit_chat("bulk-async", chat(f"n{i}"))).id

        submitted = await asyncio.gather(*(submit(i) for i in range(BULK)))
        requests.clear()
        listed = [j.id async for j in client.list(model="bulk-async", limit=PAGE)]
    await http.aclose()
    assert len(listed) == BULK
    assert set(listed) == set(submitted)
    assert len(requests) == math.ceil(BULK / PAGE)


# -- API keys and the auth errors (a server of their own: keys turn auth on) ---------------------


def test_keys_and_auth_errors(spawner: Spawner) -> None:
    server = spawner.server([{"name": "echo", "provider": "echo"}])
    with Client(server.url) as open_api:
        admin = open_api.keys.create("ops", ["admin"], name="first")  # no key yet: API open
    assert admin.key.startswith("gsk_") and admin.scopes == {"admin"}
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.get("job_1")
    with Client(server.url, admin.key) as client:
        reader = client.keys.create("team", ["read"], rpm=5)
        assert {k.id for k in client.keys.list()} == {admin.id, reader.id}
        with Client(server.url, reader.key) as read_only, pytest.raises(Forbidden):
            read_only.submit_chat("echo", chat("no"))
        assert client.keys.revoke(reader.id).revoked
        with Client(server.url, reader.key) as revoked, pytest.raises(Unauthorized):
            list(revoked.list())


async def test_async_keys(spawner: Spawner) -> None:
    server = spawner.server([{"name": "echo", "provider": "echo"}])
    async with AsyncClient(server.url) as open_api:
        admin = await open_api.keys.create("ops", ["admin", "submit", "read"])
    async with AsyncClient(server.url, admin.key) as client:
        job = await client.submit_chat("echo", chat("with a key"))
        async with client.subscribe([job.id]) as sub:
            assert [e async for e in sub][-1].status is JobStatus.SUCCEEDED
        assert [k.id for k in await client.keys.list()] == [admin.id]
    async with AsyncClient(server.url, "gsk_wrong") as wrong:
        with pytest.raises(Unauthorized):
            async with wrong.subscribe([job.id]):
                pass
