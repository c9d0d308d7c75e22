"""What the queue shares among concurrent callers: one write for concurrent submits (group
commit) and one store read per interval for every watched job (the store poll), and the
submitter's wait that reads nothing when the result comes as an event."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from genspool.backends import open_storage
from genspool.core.events import JobChanged
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.watch import GroupCommit


def job(model: str = "m", **kw: object) -> Job:
    return Job(url="/v1/chat/completions", body={"messages": []}, model=model, **kw)  # type: ignore[arg-type]


class Counting:
    """Counts calls of a backend method and passes them on (no behaviour of its own)."""

    def __init__(self, target: object, name: str) -> None:
        self.calls: list[int] = []
        inner = getattr(target, name)

        async def counted(items: Sequence[object], *args: object) -> object:
            self.calls.append(len(items))
            return await inner(items, *args)

        setattr(target, name, counted)


async def test_concurrent_submits_share_a_write_and_each_gets_its_own_job() -> None:
    async with Queue(open_storage("memory://")) as q:
        enqueue = Counting(q._jobs, "enqueue")
        q._enqueue = GroupCommit(q._jobs.enqueue)  # the counting method
        jobs = [job() for _ in range(50)]
        stored = await asyncio.gather(*(q.submit(j) for j in jobs))
        assert [s.id for s in stored] == [j.id for j in jobs]
        assert sum(enqueue.calls) == 50
        assert len(enqueue.calls) < 10, enqueue.calls  # the first alone, then the rest grouped
        assert {j.id for j in await q.get_many([j.id for j in jobs])} == {j.id for j in jobs}


async def test_a_group_that_fails_is_written_again_caller_by_caller() -> None:
    """An injected fault (a write that refuses one poisoned job): only its submitter fails."""
    async with Queue(open_storage("memory://")) as q:
        inner = q._jobs.enqueue

        async def refuses_poison(jobs: Sequence[Job]) -> list[Job]:
            if any(j.metadata.get("poison") for j in jobs):
                raise ValueError("cannot store this job")
            return await inner(jobs)

        q._enqueue = GroupCommit(refuses_poison)
        jobs = [job(metadata={"poison": i == 7}) for i in range(20)]
        results = await asyncio.gather(*(q.submit(j) for j in jobs), return_exceptions=True)
        assert [isinstance(r, ValueError) for r in results] == [i == 7 for i in range(20)]
        stored = await q.get_many([j.id for j in jobs])
        assert len(stored) == 19


async def test_a_cancelled_submitter_does_not_strand_the_others() -> None:
    async with Queue(open_storage("memory://")) as q:
        first = asyncio.create_task(q.submit(job()))
        others = [asyncio.create_task(q.submit(job())) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()
        done = await asyncio.gather(*others)
        assert all(d.status is JobStatus.QUEUED for d in done)


async def test_waiters_in_one_process_share_one_store_read_per_interval(tmp_path: Path) -> None:
    """Another process's change (a second queue on the same SQLite file, which carries no
    events between them) reaches every subscriber here through one poll."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    async with Queue(open_storage(url)) as here, Queue(open_storage(url)) as there:
        here.POLL_S = 0.05
        jobs = [await here.submit(job()) for _ in range(40)]
        reads = Counting(here._jobs, "get_many")
        waits = [asyncio.create_task(here.outcome(j, timeout=10)) for j in jobs]
        await asyncio.sleep(0.3)  # several poll rounds with nothing changed
        leased = await there.lease("m", 40)
        await there.complete([(j, {"status_code": 200, "body": {}}) for j in leased])
        done = await asyncio.gather(*waits)
        assert {d.status for d in done} == {"succeeded"}
        # One read of all 40 per round, not 40 reads per round.
        assert max(reads.calls) == 40 and len(reads.calls) <= 0.6 / 0.05 + 2, reads.calls


async def test_the_submitter_gets_the_result_event_without_reading_the_store() -> None:
    async with Queue(open_storage("memory://")) as q:
        submitted = await q.submit(job())
        reads = Counting(q, "_read")  # every read of jobs the facade makes, polls included
        q._poller._read = q._read
        waiting = asyncio.create_task(q.outcome(submitted, timeout=5))
        await asyncio.sleep(0)  # it listens (the memory backend never yields on its own)
        [leased] = await q.lease("m", 1)
        await q.complete([(leased, {"status_code": 200, "body": {"ok": True}})])
        done = await waiting
        assert isinstance(done, JobChanged)
        assert done.result == {"status_code": 200, "body": {"ok": True}}
        assert reads.calls == []


async def test_a_job_gone_from_the_store_ends_its_subscription() -> None:
    async with Queue(open_storage("memory://")) as q:
        q.POLL_S = 0.02
        ghost = job()  # never submitted: the poll finds nothing
        with pytest.raises(TimeoutError):
            await q.outcome(ghost, timeout=0.01)
        done = await q.outcome(ghost, timeout=2)
        assert done.status == "not_found"
