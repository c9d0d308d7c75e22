"""The contract of a job's history on every backend: each attempt is kept (worker, start, end,
outcome, its own error) and a retry appends to it; a job's ``error`` is only its last one; the
leasing worker is recorded; ended jobs (dead letters, cancelled, expired) can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from genspool.core.job import HISTORY_LIMIT, Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter
from genspool.exceptions import Conflict, ModelError
from genspool.testing.inprocess import FakeClock
from tests.contract.test_backend_contract import RESULT, job


async def _lease(q: Queue, worker: str, timeout: float = 5.0) -> Job:
    async with asyncio.timeout(timeout):
        while not (got := await q.lease("m", 1, worker=worker)):
            await asyncio.sleep(0.02)
    return got[0]


async def _listed(q: Queue, job_id: str) -> Job:
    """The job as the store's list has it (the mirror, on a split deployment)."""
    (found,) = [j for j in await q.list_jobs(JobFilter(limit=100)) if j.id == job_id]
    return found


async def test_two_failures_then_success_keep_three_attempts_and_no_error(
    make_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock(time.time() + 1)  # ahead of the jobs made below, which use real time
    async with make_queue(clock=clock) as q:
        stored = await q.submit(job(max_attempts=5))
        starts = []
        for n, worker in enumerate(["w-1", "w-2"], start=1):
            leased = await _lease(q, worker)
            assert leased.worker == worker and len(leased.history) == n - 1
            starts.append(clock())
            clock.advance(2.0)
            (retrying,) = await q.fail([(leased, ModelError(f"boom {n}"))])
            assert retrying.error is not None and retrying.error["message"] == f"boom {n}"
            clock.advance(1.0)  # past the backoff
        running = await _lease(q, "w-3")
        assert (await q.get(stored.id)).worker == "w-3"
        starts.append(clock())
        clock.advance(2.0)
        assert len(await q.complete([(running, RESULT)])) == 1
        for done in (await q.get(stored.id), await _listed(q, stored.id)):
            assert done.status is JobStatus.SUCCEEDED and done.error is None
            assert done.result == RESULT and done.attempts == 3
            history = done.history
            assert [a["attempt"] for a in history] == [1, 2, 3]
            assert [a["worker"] for a in history] == ["w-1", "w-2", "w-3"]
            assert [a["outcome"] for a in history] == ["failed", "failed", "succeeded"]
            assert [a["started_at"] for a in history] == starts
            assert [a["ended_at"] for a in history] == [s + 2.0 for s in starts]
            errors = [a["error"] and a["error"]["message"] for a in history]
            assert errors == ["boom 1", "boom 2", None]
            assert history[0]["error"]["code"] == "model_error"


async def test_dead_letter_release_and_cancel_end_an_attempt_too(queue: Queue) -> None:
    stored = await queue.submit(job(max_attempts=1))
    (leased,) = await queue.lease("m", 1, worker="w")
    (released,) = await queue.release([leased])
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    leased = await _lease(queue, "w")
    (dead,) = await queue.fail([(leased, ModelError("boom"))])
    assert dead.status is JobStatus.FAILED and "boom" in dead.error["message"]
    got = await queue.get(stored.id)
    assert [(a["attempt"], a["outcome"]) for a in got.history] == [(1, "released"), (1, "failed")]
    assert got.history[1]["error"] == got.error

    running = await queue.submit(job())
    await _lease(queue, "w2")
    cancelled = await queue.cancel(running.id)
    assert [(a["worker"], a["outcome"]) for a in cancelled.history] == [("w2", "cancelled")]
    assert (await queue.get(running.id)).history == cancelled.history
    waiting = await queue.cancel((await queue.submit(job())).id)
    assert waiting.history == []  # it never ran


async def test_history_keeps_the_last_attempts_only(make_queue: Callable[..., Queue]) -> None:
    clock = FakeClock(time.time() + 1)
    async with make_queue(clock=clock) as q:
        stored = await q.submit(job())
        for _ in range(HISTORY_LIMIT + 3):  # releases do not use up attempts
            leased = await _lease(q, "w")
            await q.release([leased])
            clock.advance(0.5)
        got = await q.get(stored.id)
    assert len(got.history) == HISTORY_LIMIT
    assert got.history[-1]["started_at"] > got.history[0]["started_at"] + (HISTORY_LIMIT - 2) * 0.5


async def test_replay_a_cancelled_job_keeps_its_history(queue: Queue) -> None:
    stored = await queue.submit(job())
    await _lease(queue, "w")
    await queue.cancel(stored.id)
    replayed = await queue.replay(stored.id)
    assert replayed.status is JobStatus.QUEUED and replayed.attempts == 0
    assert replayed.error is None and replayed.finished_at is None
    again = await _lease(queue, "w2")
    assert again.id == stored.id and again.attempts == 1
    await queue.complete([(again, RESULT)])
    done = await queue.get(stored.id)
    assert done.status is JobStatus.SUCCEEDED
    assert [(a["worker"], a["outcome"]) for a in done.history] == [
        ("w", "cancelled"),
        ("w2", "succeeded"),
    ]
    with contextlib.suppress(Conflict):
        await queue.replay(stored.id)
        raise AssertionError("replaying a succeeded job must be a Conflict")


async def test_replay_an_expired_job_runs_it_without_the_deadline(
    make_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock(time.time() + 1)
    async with make_queue(clock=clock) as q:
        stored = await q.submit(job(expires_at=clock() + 10))
        clock.advance(20.0)
        assert (await q.maintain())["expired"] == 1
        assert (await q.get(stored.id)).status is JobStatus.EXPIRED
        replayed = await q.replay(stored.id)
        assert replayed.status is JobStatus.QUEUED and replayed.expires_at is None
        assert replayed.error is None
        assert (await q.maintain())["expired"] == 0  # not expired again
        assert await q.storage.queue.overdue(clock() + 3600, 10) == []  # in no expiry index
        leased = await _lease(q, "w")
        assert leased.id == stored.id and leased.expires_at is None
        await q.complete([(leased, RESULT)])
        done = await q.get(stored.id)
        assert done.status is JobStatus.SUCCEEDED and done.expires_at is None
        assert (await _listed(q, stored.id)).expires_at is None
