"""A separate store converges with the queue (issue 14, item 7).

The Outbox role's contract on every backend that can be a split deployment's queue (memory,
Redis, NATS): writes are marked once ``epoch`` is called, ``copied`` clears only marks still as
read, ``purge`` keeps marked jobs. Then the facade on split deployments: a worker that dies between
the queue write and the store write (``FakeDeathBetweenWrites``: the store copy is never made,
as when the process is killed right after the queue's reply) leaves the store behind only until
another process's ``maintain``; a purge never removes what the store has not copied, and after
it ``get`` and ``list`` agree with the final state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import cast

import pytest

from genspool.core.job import Job, JobStatus
from genspool.core.machine import PURGEABLE, lease_spec, succeed
from genspool.core.mirror import Mirror
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter, Outbox
from genspool.exceptions import NotFound
from tests.helpers.backends import kind_url

ROLE_KINDS = ["memory", "redis", "nats"]
SPLIT_KINDS = ["memory+sqlite", "redis+postgres", "redis+sqlite", "nats+postgres", "nats+sqlite"]
AHEAD = Mirror.GRACE_S + 5.0  # a maintaining process's clock, past every mark's grace


@pytest.fixture(params=ROLE_KINDS + SPLIT_KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def job(n: int = 0) -> Job:
    body = {"model": "m", "messages": [{"role": "user", "content": f"hi {n}"}]}
    return Job(url="/v1/chat/completions", body=body, model="m")


def outbox_of(queue: Queue) -> Outbox:
    assert isinstance(queue.storage.queue, Outbox), "every kind here keeps an outbox"
    return queue.storage.queue


def later() -> float:
    return time.time() + 1.0


async def test_marks_each_write_and_clears_only_what_was_copied(queue: Queue) -> None:
    outbox, jobs = outbox_of(queue), queue.storage.queue
    first = await outbox.epoch()
    assert await outbox.epoch() == first
    a, b = job(1), job(2)
    await jobs.enqueue([a, b])
    marks = {j.id: at for j, at in await outbox.pending(later(), 10)}
    assert set(marks) == {a.id, b.id}
    assert await outbox.pending(min(marks.values()), 10) == []  # younger than ``before``
    await outbox.copied(list(marks.items()))
    assert await outbox.pending(later(), 10) == []

    (leased,) = await jobs.lease(lease_spec("m", 1, time.time(), 30.0))
    ((seen, mark),) = await outbox.pending(later(), 10)
    assert (seen.id, seen.status) == (leased.id, JobStatus.RUNNING)
    assert await jobs.apply([succeed(leased, {"ok": 1}, time.time() + 0.01)]) == {leased.id}
    await outbox.copied([(leased.id, mark)])  # read before the success: the mark stays
    ((after, _),) = await outbox.pending(later(), 10)
    assert after.status is JobStatus.SUCCEEDED


async def test_purge_keeps_jobs_the_store_has_not_copied(queue: Queue) -> None:
    outbox, jobs = outbox_of(queue), queue.storage.queue
    await outbox.epoch()
    await jobs.enqueue([job()])
    (leased,) = await jobs.lease(lease_spec("m", 1, time.time(), 30.0))
    await jobs.apply([succeed(leased, {"ok": 1}, time.time() - 100.0)])
    statuses = sorted(s.value for s in PURGEABLE)
    assert await jobs.purge(statuses, time.time()) == 0
    await outbox.copied([(j.id, at) for j, at in await outbox.pending(later(), 10)])
    assert await purged_soon(queue, statuses, time.time) == 1


async def purged_soon(queue: Queue, statuses: list[str], cutoff: Callable[[], float]) -> int:
    """How many jobs ``purge`` removes within a second: NATS purges by timers, and one put back
    because its job was marked comes again a few milliseconds later."""
    purged, deadline = 0, time.monotonic() + 1.0
    while not purged and time.monotonic() < deadline:
        purged = await queue.storage.queue.purge(statuses, cutoff())
        await asyncio.sleep(0.02 * (not purged))
    return purged


class FakeDeathBetweenWrites:
    """Makes a queue's store copies vanish, as if its process were SIGKILLed right after each
    queue write: the window is too short to hit by a real kill on every transition."""

    def __init__(self, queue: Queue) -> None:
        self.store = queue.storage.store
        self.real_put = self.store.put

    async def _vanish(self, jobs: Sequence[Job]) -> None:
        return None

    def __enter__(self) -> None:
        self.store.put = self._vanish  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        self.store.put = self.real_put  # type: ignore[method-assign]


def split(queue: Queue) -> None:
    assert queue.storage.mirrored, "a split kind: the queue and the store are two backends"
    outbox_of(queue)


async def agree(queue: Queue, jobs: Sequence[Job]) -> dict[str, JobStatus]:
    """The statuses ``get`` gives, after checking that the store and ``list`` say the same."""
    got = {j.id: (await queue.get(j.id)).status for j in jobs}
    stored = {j.id: j.status for j in await queue.storage.store.get_many(list(got))}
    listed = {j.id: j.status for j in await queue.list_jobs(JobFilter(limit=100))}
    assert stored == got and {i: listed[i] for i in got} == got
    return got


@pytest.mark.parametrize("backend_url", SPLIT_KINDS, indirect=True)  # split only
async def test_store_catches_up_after_deaths_between_writes(
    queue: Queue, make_queue: Callable[..., Queue]
) -> None:
    split(queue)
    with FakeDeathBetweenWrites(queue):
        submitted = await queue.submit_many([job(n) for n in range(4)])
        leased = await queue.lease("m", 3)
        await queue.complete([(j, {"n": 1}) for j in leased[:2]])
        await queue.fail([(leased[2], ValueError("bad"))])
    assert await queue.storage.store.get_many([j.id for j in submitted]) == []

    other = make_queue(clock=lambda: time.time() + AHEAD)
    await other.connect()
    try:
        await other.maintain()
        assert other.mirror is not None and other.mirror.last["copied"] >= 4
        statuses = await agree(other, submitted)
    finally:
        await other.close()
    assert sorted(statuses.values()) == sorted(
        [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED, JobStatus.RETRYING, JobStatus.QUEUED]
    )


@pytest.mark.parametrize("backend_url", SPLIT_KINDS, indirect=True)  # split only
async def test_purge_waits_for_the_store_and_then_get_and_list_agree(
    queue: Queue, make_queue: Callable[..., Queue]
) -> None:
    split(queue)
    with FakeDeathBetweenWrites(queue):
        (done,) = await queue.submit_many([job()])
        (leased,) = await queue.lease("m", 1)
        await queue.complete([(leased, {"answer": 42})])
    statuses = sorted(s.value for s in PURGEABLE)
    assert await queue.storage.queue.purge(statuses, time.time() + 3600) == 0

    other = make_queue(clock=lambda: time.time() + AHEAD)
    await other.connect()
    try:
        await other.maintain()
        assert other.mirror is not None and other.mirror.last["copied"] >= 1
        assert await purged_soon(other, statuses, lambda: time.time() + 3600) == 1
        assert await other.storage.queue.get_many([done.id]) == []
        got = await other.get(done.id)
        assert (got.status, got.result) == (JobStatus.SUCCEEDED, {"answer": 42})
        assert await agree(other, [done]) == {done.id: JobStatus.SUCCEEDED}
        other.result_ttl_s = 0.0  # both copies past their TTL: gone from both
        await other.maintain()
        with pytest.raises(NotFound):
            await other.get(done.id)
        assert await other.list_jobs(JobFilter(limit=10)) == []
    finally:
        await other.close()


@pytest.mark.parametrize("backend_url", SPLIT_KINDS, indirect=True)  # split only
async def test_a_queue_that_lost_its_data_gets_the_stores_active_jobs_back(
    queue: Queue,
) -> None:
    split(queue)
    outbox = cast(Outbox, queue.storage.queue)
    jobs = await queue.submit_many([job(n) for n in range(3)])
    (running,) = await queue.lease("m", 1)
    await queue.maintain()  # the store has seen this epoch
    await queue.storage.queue.destroy()  # the server came back empty
    await queue.maintain()
    assert queue.mirror is not None and queue.mirror.last["restored"] == 3
    assert await outbox.epoch()
    back = {j.id: j for j in await queue.storage.queue.get_many([j.id for j in jobs])}
    assert set(back) == {j.id for j in jobs}
    assert back[running.id].status is JobStatus.QUEUED and back[running.id].attempts == 0
    assert await agree(queue, jobs) == {j.id: JobStatus.QUEUED for j in jobs}
