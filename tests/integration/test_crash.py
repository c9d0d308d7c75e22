"""Workers that die or are told to stop: every job still ends with exactly one result.

Real processes on one real SQLite file: a ``genspool api`` process takes the jobs, ``genspool
worker`` processes run them on an echo model (named as such: it computes nothing; its
``latency_ms`` makes a batch take a known time). Leases are short (GENSPOOL_LEASE_S=2) so the jobs
of a killed worker come back quickly. The state is checked in the database file itself.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import orjson

from genspool.backends.sqlite import SQLiteBackend
from genspool.config import ModelConfig
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.runtime import ModelRegistry
from tests.helpers.processes import Spawner

CHAT = "/v1/chat/completions"
ENV = {"GENSPOOL_LEASE_S": "2", "GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.2"}
CRASHY = {
    "name": "crashy",
    "provider": "echo",
    "max_attempts": 3,
    "batching": {"max_batch_size": 8, "max_concurrency": 2, "max_wait_ms": 5},
    "options": {"latency_ms": 200},
}


def counts(spawner: Spawner, db: Path) -> dict[str, int]:
    return dict(spawner.read_db(db, "SELECT status, count(*) FROM jobs GROUP BY status"))


def submit_chats(url: str, model: str, texts: list[str]) -> list[str]:
    with httpx.Client(base_url=url, timeout=30) as client:
        ids = []
        for text in texts:
            r = client.post(
                "/v1/jobs",
                json={
                    "url": CHAT,
                    "body": {"model": model, "messages": [{"role": "user", "content": text}]},
                },
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        return ids


def test_worker_killed_mid_batch_every_job_ends_with_exactly_one_result(
    spawner: Spawner,
) -> None:
    api = spawner.server([CRASHY], command="api", env=ENV)
    texts = [f"crash test {i}" for i in range(200)]
    ids = submit_chats(api.url, "crashy", texts)
    assert counts(spawner, api.db) == {"queued": 200}

    first = spawner.worker(api.db, api.config, env=ENV)
    spawner.wait_until(
        lambda: counts(spawner, api.db).get("succeeded", 0) >= 24,
        timeout=20,
        what="the first worker to finish a few batches",
    )
    first.kill()  # SIGKILL: no drain, no release, leases left behind
    assert first.popen.returncode == -signal.SIGKILL

    rows = spawner.read_db(api.db, "SELECT id, status, attempts FROM jobs")
    in_flight = {i for i, status, _ in rows if status == "running"}
    assert in_flight, f"the worker died with no batch in flight: {counts(spawner, api.db)}"
    assert all(a == 1 for _, status, a in rows if status == "running")
    done_before = {i for i, status, _ in rows if status == "succeeded"}
    assert 0 < len(done_before) < 200

    spawner.worker(api.db, api.config, env=ENV)
    spawner.wait_until(
        lambda: counts(spawner, api.db).get("succeeded", 0) == 200,
        timeout=60,
        interval=0.2,
        what="all 200 jobs to succeed after the restart",
    )

    rows = spawner.read_db(
        api.db,
        "SELECT id, status, attempts, max_attempts, result, lease_token, finished_at FROM jobs",
    )
    assert len(rows) == 200 and {r[0] for r in rows} == set(ids)
    by_id = {r[0]: r for r in rows}
    for job_id, text in zip(ids, texts, strict=True):
        _, status, attempts, max_attempts, result, lease, finished = by_id[job_id]
        assert status == "succeeded"
        assert result is not None and finished is not None and lease is None
        assert 1 <= attempts <= max_attempts
        body = orjson.loads(result)["body"]
        assert body["choices"][0]["message"]["content"] == text  # its own result, not another's
    # The jobs the dead worker held were run again (one more attempt); no other job was.
    rerun = {r[0] for r in rows if r[2] > 1}
    assert rerun == in_flight
    assert all(by_id[i][2] == 2 for i in rerun)
    # Jobs finished before the crash kept their result and were not run again.
    assert all(by_id[i][2] == 1 for i in done_before)

    # The API agrees with the file.
    page = api.client.get("/v1/jobs", params={"status": "succeeded", "limit": 1000}).json()
    assert len(page["data"]) == 200 and not page["has_more"]


def test_sigterm_drains_the_batch_in_flight_and_exits(spawner: Spawner) -> None:
    slow = {
        "name": "drain",
        "provider": "echo",
        "batching": {"max_batch_size": 4, "max_concurrency": 1, "max_wait_ms": 50},
        "options": {"latency_ms": 1500},
    }
    api = spawner.server([slow], command="api", env=ENV)
    ids = submit_chats(api.url, "drain", [f"drain {i}" for i in range(4)])
    worker = spawner.worker(api.db, api.config, env=ENV)
    spawner.wait_until(
        lambda: counts(spawner, api.db).get("running", 0) == 4,
        timeout=15,
        what="the batch to be in flight",
    )
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(40)  # within the 30 s drain timeout (plus start-up slack)
    elapsed = time.monotonic() - t0
    assert code == 0, worker.stderr()
    assert elapsed < 10, f"draining one 1.5 s batch took {elapsed:.1f} s"
    rows = spawner.read_db(api.db, "SELECT status, attempts FROM jobs")
    assert rows == [("succeeded", 1)] * 4, "the batch in flight was not finished while draining"
    assert all(api.get(i)["status"] == "succeeded" for i in ids)


def test_sigterm_hands_back_leased_jobs_without_counting_the_attempt(spawner: Spawner) -> None:
    # The first worker runs a blocker batch (an idle lane starts its first job at once), so it
    # leases the next jobs and keeps gathering a bigger batch (max_wait_ms 20 s); the
    # second worker serves the same model name without waiting.
    gathering = {
        "name": "gather",
        "provider": "echo",
        "batching": {"max_batch_size": 100, "max_wait_ms": 20_000, "max_concurrency": 2},
        "options": {"latency_ms": 3000},
    }
    api = spawner.server([gathering], command="api", env=ENV)
    assert api.config is not None
    eager_batching = {"max_batch_size": 100, "max_wait_ms": 5}
    eager = spawner.models([{**gathering, "batching": eager_batching}], "eager.yaml")
    first = spawner.worker(api.db, api.config, env=ENV)
    submit_chats(api.url, "gather", ["blocker"])
    spawner.wait_until(
        lambda: counts(spawner, api.db).get("running", 0) == 1,
        timeout=15,
        what="the first worker to start the blocker",
    )
    ids = submit_chats(api.url, "gather", [f"handed back {i}" for i in range(3)])
    spawner.wait_until(
        lambda: counts(spawner, api.db).get("running", 0) == 4,
        timeout=15,
        what="the first worker to lease the jobs",
    )
    t0 = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait(15) == 0, first.stderr()
    assert time.monotonic() - t0 < 6  # the blocker's 3 s at most, not the 20 s gathering
    rows = spawner.read_db(
        api.db, "SELECT status, attempts, lease_token FROM jobs WHERE status != 'succeeded'"
    )
    assert rows == [("queued", 0, None)] * 3, rows
    assert counts(spawner, api.db).get("succeeded") == 1  # the blocker, finished by the drain

    spawner.worker(api.db, eager, env=ENV)
    done = api.wait_all(ids, timeout=15)
    assert [(j["status"], j["attempts"]) for j in done] == [("succeeded", 1)] * 3


async def test_drain_timeout_hands_back_the_jobs_of_unfinished_batches(tmp_path: Path) -> None:
    """A batch that outlives the drain timeout is cancelled; its jobs must go back to the queue
    at once, without counting the attempt, and not wait for their leases to run out.

    In-process (the drain timeout is not a setting of ``genspool worker``), on a real SQLite
    file, with an echo model whose batch takes far longer than the drain timeout."""
    url = f"sqlite:///{tmp_path}/drain.db"
    cfg = ModelConfig(
        name="stuck",
        provider="echo",
        options={"latency_ms": 60_000},
        batching={"max_batch_size": 4, "max_wait_ms": 20},
    )
    queue = Queue(SQLiteBackend.from_url(url), lease_s=30, retry=RetryPolicy(base_s=0.05))
    async with queue:
        jobs = [
            Job(
                url=CHAT,
                model="stuck",
                body={"model": "stuck", "messages": [{"role": "user", "content": f"stuck {i}"}]},
            )
            for i in range(3)
        ]
        await queue.submit_many(jobs)
        worker = Worker(queue, ModelRegistry([cfg]), drain_timeout_s=0.3)
        run = asyncio.create_task(worker.run())
        async with asyncio.timeout(10):
            while [j.status.value for j in await queue.get_many([j.id for j in jobs])] != [
                "running"
            ] * 3:
                await asyncio.sleep(0.05)
        t0 = time.monotonic()
        worker.stop()
        await asyncio.wait_for(run, 5)
        assert time.monotonic() - t0 < 2
        after = await queue.get_many([j.id for j in jobs])
        assert [(j.status.value, j.attempts, j.lease_token) for j in after] == [
            ("queued", 0, None)
        ] * 3, [j.public() for j in after]

        fast = ModelConfig(name="stuck", provider="echo", batching={"max_wait_ms": 5})
        second = Worker(queue, ModelRegistry([fast]))
        task = asyncio.create_task(second.run())
        try:
            for job in jobs:
                done = await queue.wait(job.id, timeout=10)
                assert (done.status.value, done.attempts) == ("succeeded", 1)
        finally:
            second.stop()
            await asyncio.wait_for(task, 10)
