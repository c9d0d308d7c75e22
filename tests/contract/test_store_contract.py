"""The JobStore role's contract: whole records in (``put``, the mirror of a separate queue),
reads, newest-first lists with filters and a cursor, and purges by status and age."""

from __future__ import annotations

import time
from typing import Any

from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter


def record(n: int, **kw: Any) -> Job:
    t = 1_000_000.0 + n
    base: dict[str, Any] = {
        "url": "/v1/embeddings",
        "body": {"model": "e", "input": f"text {n}"},
        "model": "e",
        "id": f"job_{n:08d}",
        "created_at": t,
        "available_at": t,
    }
    return Job(**{**base, **kw})


async def test_put_stores_whole_records_and_replaces_them(queue: Queue) -> None:
    store = queue.storage.store
    done = record(
        1,
        status=JobStatus.SUCCEEDED,
        attempts=2,
        tenant="t",
        metadata={"k": [1]},
        started_at=5.0,
        finished_at=6.0,
        result={"status_code": 200, "body": {"data": []}},
    )
    await store.put([done, record(2, priority=4)])
    (got,) = await store.get_many([done.id])
    assert (got.status, got.attempts, got.tenant, got.metadata) == (
        JobStatus.SUCCEEDED, 2, "t", {"k": [1]}
    )  # fmt: skip
    assert (got.result, got.started_at, got.finished_at) == (done.result, 5.0, 6.0)
    done.status, done.error, done.result = JobStatus.FAILED, {"code": "x", "message": "y"}, None
    await store.put([done])
    (again,) = await store.get_many([done.id])
    assert again.status is JobStatus.FAILED and again.error == done.error and again.result is None
    assert {j.id for j in await store.get_many(["job_00000002", "job_nope"])} == {"job_00000002"}


async def test_list_is_newest_first_with_filters_and_cursor(queue: Queue) -> None:
    store = queue.storage.store
    await store.put(
        [record(n, tenant="a" if n % 2 else "b", status=JobStatus.QUEUED) for n in range(1, 8)]
    )
    everything = await store.list_jobs(JobFilter(limit=100))
    assert [j.id for j in everything] == [f"job_{n:08d}" for n in range(7, 0, -1)]
    tenant_a = await store.list_jobs(JobFilter(tenant="a", limit=2))
    assert [j.id for j in tenant_a] == ["job_00000007", "job_00000005"]
    after = await store.list_jobs(JobFilter(tenant="a", before=tenant_a[-1].id, limit=10))
    assert [j.id for j in after] == ["job_00000003", "job_00000001"]
    assert await store.list_jobs(JobFilter(status=JobStatus.FAILED)) == []
    assert len(await store.list_jobs(JobFilter(model="e", status=JobStatus.QUEUED))) == 7
    assert await store.list_jobs(JobFilter(model="other")) == []


async def test_purge_deletes_the_given_statuses_finished_before(queue: Queue) -> None:
    store = queue.storage.store
    now = time.time()
    await store.put(
        [
            record(1, status=JobStatus.SUCCEEDED, finished_at=now - 100),
            record(2, status=JobStatus.FAILED, finished_at=now - 100),
            record(3, status=JobStatus.SUCCEEDED, finished_at=now),
            record(4, status=JobStatus.QUEUED),
        ]
    )
    assert await store.purge(["succeeded", "cancelled", "expired"], now - 50) == 1
    left = {j.id for j in await store.get_many([f"job_{n:08d}" for n in range(1, 5)])}
    assert left == {"job_00000002", "job_00000003", "job_00000004"}
