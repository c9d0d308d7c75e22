"""A split deployment (queue on Redis or NATS, store on PostgreSQL) converges while its workers
are SIGKILLed again and again (issue 14, item 7: 32 of 3,000 jobs stayed ``running`` in the
store after 20 worker kills).

Real processes: one ``genspool api`` takes the jobs, ``genspool worker`` processes run them on
an echo model (named as such: it computes nothing; ``latency_ms`` makes a batch take a known
time) and are killed with SIGKILL at short intervals, each replaced by a new one, while jobs
run; a kill may land between a job's write to the queue and its copy to the store. After the
last kill one worker is left to finish. Every job must then reach its terminal state in the
store itself (read directly, not through the queue), and the API's list must agree with its
get and with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import parse_qsl

import httpx
import psycopg
import pytest
from psycopg import sql

from genspool.backends import open_storage
from genspool.core.job import Job
from genspool.core.queue import Queue
from tests.helpers.processes import TERMINAL, Proc, Spawner, Target, fresh_target

CHAT = "/v1/chat/completions"
MODELS = [
    {
        "name": "echo",
        "provider": "echo",
        "max_attempts": 20,  # every job may be caught by several kills and must still succeed
        "batching": {"max_batch_size": 16, "max_wait_ms": 5, "max_concurrency": 2},
        "options": {"latency_ms": int(os.environ.get("SPLIT_CRASH_LATENCY_MS", "5"))},
    }
]
JOBS = int(os.environ.get("SPLIT_CRASH_JOBS", "3500"))
KILLS = int(os.environ.get("SPLIT_CRASH_KILLS", "15"))
#: Every third kill round, the store refuses writes for HELD_S, then every worker is killed.
KILL_EVERY_S, HELD_S, WORKERS = 1.0, 0.8, 3


@pytest.fixture(params=["redis+postgres", "nats+postgres"])
def split(
    request: pytest.FixtureRequest, namespaced_url: Callable[[str], str], spawner: Spawner
) -> Iterator[Target]:
    """Fresh namespaces on the shared servers: the queue on the first, the store on the second."""
    yield from fresh_target(request.param, namespaced_url, spawner)


def stored_statuses(store_url: str, ids: Sequence[str]) -> dict[str, str]:
    """The jobs' statuses in the store itself (its own connection, no queue in front)."""

    async def read() -> dict[str, str]:
        storage = open_storage(store_url)
        await storage.connect()
        try:
            jobs = await storage.store.get_many(list(ids))
        finally:
            await storage.close()
        return {j.id: j.status.value for j in jobs}

    return asyncio.run(read())


async def submit_many(target: Target, n: int) -> list[str]:
    """A backlog big enough to keep the workers busy through every kill, submitted through the
    queue facade of this process (many times faster than one HTTP request per job)."""
    queue = Queue(open_storage(target.url, queue_url=target.queue_url))
    async with queue:
        jobs = [job(i) for i in range(1, n + 1)]
        for start in range(0, n, 500):
            await queue.submit_many(jobs[start : start + 500])
    return [j.id for j in jobs]


def job(n: int) -> Job:
    body = {"model": "echo", "messages": [{"role": "user", "content": f"job {n}"}]}
    return Job(url=CHAT, body=body, model="echo", max_attempts=20)


def submit(client: httpx.Client, n: int) -> str:
    body = {"model": "echo", "messages": [{"role": "user", "content": f"job {n}"}]}
    r = client.post("/v1/jobs", json={"url": CHAT, "body": body})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


@contextlib.contextmanager
def store_writes_refused(store_url: str) -> Iterator[None]:
    """Make the store refuse every write to its jobs table (a constraint no row meets, as a full
    disk or a revoked grant would refuse them), for the ``with`` block: the workers' queue
    writes go on and their copies to the store fail, so a kill then lands between the two
    writes of every batch that ended meanwhile. A random kill rarely does: the window is the
    few microseconds before the copy is sent (PostgreSQL runs a statement it has received to
    its end even when its client is SIGKILLed while the statement waits)."""
    base, _, query = store_url.partition("?")
    table = sql.Identifier(dict(parse_qsl(query))["schema"], "jobs")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT refuse CHECK (false) NOT VALID").format(table)
        )
        try:
            yield
        finally:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT refuse").format(table))


def kill_and_replace(spawner: Spawner, workers: list[Proc], start: Callable[[], Proc]) -> None:
    """SIGKILL the oldest worker (no drain, no release) and start another."""
    victim = workers.pop(0)
    victim.kill()
    assert victim.popen.returncode == -signal.SIGKILL, victim.report()
    workers.append(start())


def test_workers_killed_while_jobs_run_every_job_ends_in_the_store(
    spawner: Spawner, split: Target
) -> None:
    config = spawner.models(MODELS)
    api = spawner.server(config, command="api", db_url=split.url, env=split.env)

    def start() -> Proc:
        return spawner.worker(split.url, config, env=split.env)

    first = submit(api.client, 0)  # the API's own door works on this deployment
    ids = asyncio.run(submit_many(split, JOBS))
    workers = [start() for _ in range(WORKERS)]
    left = 0
    for n in range(KILLS):
        time.sleep(KILL_EVERY_S)
        if n % 3 < 2:
            kill_and_replace(spawner, workers, start)
            continue
        with store_writes_refused(split.url):
            time.sleep(HELD_S)  # the workers go on: every copy they make fails
            for victim in workers:
                victim.kill()
        workers = [start() for _ in range(WORKERS)]
        if n == 2:  # the first round of each kind is over: was work still running?
            ended = stored_statuses(split.url, ids)
            left = sum(s not in TERMINAL for s in ended.values())
            print(f"after 3 kill rounds: {left} of {len(ids)} jobs not ended in the store")
    ids.append(first)
    assert left, "the workers finished before the kills: make the backlog bigger"

    def settled() -> dict[str, str] | None:
        stored = stored_statuses(split.url, ids)
        done = len(stored) == len(ids) and set(stored.values()) <= TERMINAL
        return stored if done else None

    stored = spawner.wait_until(
        settled, timeout=90, interval=0.5, what="every job to end in the store"
    )
    assert set(stored.values()) == {"succeeded"}, sorted(stored.items())[:5]

    got = {i: api.get(i)["status"] for i in ids}
    assert got == stored
    assert listed_statuses(api.client) == stored


def listed_statuses(client: httpx.Client) -> dict[str, str]:
    """Every job as ``GET /v1/jobs`` lists it, page after page."""
    listed: dict[str, str] = {}
    params: dict[str, str | int] = {"limit": 500}
    while True:
        page = client.get("/v1/jobs", params=params).json()
        listed |= {j["id"]: j["status"] for j in page["data"]}
        if not page["has_more"]:
            return listed
        params["after"] = page["data"][-1]["id"]
