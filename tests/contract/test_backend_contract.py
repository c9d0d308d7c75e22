"""The contract every queue/store backend meets, run through the Queue facade.

Leases, lease expiry and redelivery, fencing of stale workers, retries with backoff, dead
letters and replay, idempotency, priorities, cancel, expiry, result TTL, events. A backend is
done when this file passes on it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter
from genspool.exceptions import CircuitOpen, Conflict, ModelError, NotFound
from genspool.testing.inprocess import FakeClock

CHAT = "/v1/chat/completions"
RESULT = {"status_code": 200, "body": {"object": "chat.completion", "choices": []}}


def job(model: str = "m", **kw: Any) -> Job:
    body = {"model": model, "messages": [{"role": "user", "content": kw.pop("text", "hi")}]}
    return Job(url=CHAT, body=body, model=model, **kw)


async def test_submit_and_get_round_trip(queue: Queue) -> None:
    j = job(priority=3, metadata={"k": [1, "x"]}, max_attempts=5, tenant="t1")
    stored = await queue.submit(j)
    got = await queue.get(stored.id)
    assert got.status is JobStatus.QUEUED
    assert (got.body, got.metadata, got.priority, got.max_attempts) == (j.body, j.metadata, 3, 5)
    assert got.attempts == 0 and got.result is None and got.timestamps()["queued"] > 0


async def test_get_unknown_or_other_tenant_is_not_found(queue: Queue) -> None:
    stored = await queue.submit(job(tenant="a"))
    with contextlib.suppress(NotFound):
        await queue.get("job_nope")
        raise AssertionError("unknown id must be NotFound")
    with contextlib.suppress(NotFound):
        await queue.get(stored.id, tenant="b")
        raise AssertionError("another tenant's job must be NotFound")


async def test_lease_takes_each_job_once_and_only_its_model(queue: Queue) -> None:
    await queue.submit_many([job() for _ in range(5)] + [job(model="other")])
    first = await queue.lease("m", 3)
    second = await queue.lease("m", 10)
    assert len(first) == 3 and len(second) == 2
    assert not {j.id for j in first} & {j.id for j in second}
    assert all(j.status is JobStatus.RUNNING and j.attempts == 1 and j.lease_token for j in first)
    assert [j.model for j in await queue.lease("other", 10)] == ["other"]
    assert await queue.lease("m", 10) == []


async def test_priority_then_fifo(queue: Queue) -> None:
    low = [await queue.submit(job(text=f"low{i}")) for i in range(3)]
    high = await queue.submit(job(priority=5))
    order = [j.id for j in await queue.lease("m", 10)]
    assert order == [high.id] + [j.id for j in low]


async def test_complete_stores_result_once(queue: Queue) -> None:
    await queue.submit(job())
    (leased,) = await queue.lease("m", 1)
    assert len(await queue.complete([(leased, RESULT)])) == 1
    done = await queue.get(leased.id)
    assert done.status is JobStatus.SUCCEEDED and done.result == RESULT
    assert done.finished_at is not None and "succeeded" in done.timestamps()
    again = await queue.complete([(leased, {"status_code": 200, "body": {"other": 1}})])
    assert again == [] and (await queue.get(leased.id)).result == RESULT


async def test_expired_lease_is_redelivered_and_stale_worker_is_fenced(
    make_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock(time.time() + 1)  # ahead of the jobs made below, which use real time
    q = make_queue(lease_s=30.0, clock=clock)
    async with q:
        await q.submit(job())
        (stale,) = await q.lease("m", 1)
        clock.advance(31.0)
        assert (await q.maintain())["reclaimed"] == 1
        retried = await q.get(stale.id)
        assert retried.status is JobStatus.RETRYING and "lease expired" in retried.error["message"]
        clock.advance(1.0)  # past the retry's backoff
        fresh = await _lease_eventually(q, "m")
        assert fresh.id == stale.id and fresh.attempts == 2
        assert await q.complete([(stale, {"status_code": 200, "body": {"stale": True}})]) == []
        assert len(await q.complete([(fresh, RESULT)])) == 1
        assert (await q.get(stale.id)).result == RESULT


async def test_heartbeat_keeps_the_lease(make_queue: Callable[..., Queue]) -> None:
    clock = FakeClock(time.time() + 1)  # ahead of the jobs made below, which use real time
    q = make_queue(lease_s=30.0, clock=clock)
    async with q:
        await q.submit(job())
        leased = await q.lease("m", 1)
        for _ in range(3):
            clock.advance(15.0)
            assert await q.heartbeat(leased) == 1
        assert (await q.maintain())["reclaimed"] == 0
        assert (await q.get(leased[0].id)).status is JobStatus.RUNNING


async def test_failure_retries_after_backoff_then_dead_letters(queue: Queue) -> None:
    stored = await queue.submit(job(max_attempts=2))
    (first,) = await queue.lease("m", 1)
    (retrying,) = await queue.fail([(first, ModelError("boom 503"))])
    assert retrying.status is JobStatus.RETRYING and retrying.available_at > retrying.retried_at
    second = await _lease_eventually(queue, "m")
    assert second.attempts == 2
    (dead,) = await queue.fail([(second, ModelError("boom again"))])
    assert dead.status is JobStatus.FAILED and "2 attempts used" in dead.error["message"]
    assert [j.id for j in await queue.list_jobs(JobFilter(status=JobStatus.FAILED))] == [stored.id]


async def test_retry_after_is_a_floor(queue: Queue) -> None:
    await queue.submit(job())
    (leased,) = await queue.lease("m", 1)
    (retrying,) = await queue.fail([(leased, ModelError("429", retry_after=5.0))])
    assert retrying.available_at - retrying.retried_at >= 4.9


async def test_not_retryable_goes_straight_to_dead_letters(queue: Queue) -> None:
    await queue.submit(job(max_attempts=5))
    (leased,) = await queue.lease("m", 1)
    (dead,) = await queue.fail([(leased, ModelError("400 bad", retryable=False))])
    assert dead.status is JobStatus.FAILED and dead.attempts == 1
    assert "not retryable" in dead.error["message"]


async def test_replay_requeues_a_dead_letter_with_fresh_attempts(queue: Queue) -> None:
    stored = await queue.submit(job(max_attempts=1))
    (leased,) = await queue.lease("m", 1)
    await queue.fail([(leased, ModelError("boom"))])
    replayed = await queue.replay(stored.id)
    assert replayed.status is JobStatus.QUEUED and replayed.attempts == 0 and replayed.error is None
    (again,) = await queue.lease("m", 1)
    assert again.id == stored.id and again.attempts == 1
    with contextlib.suppress(Conflict):
        await queue.replay(stored.id)
        raise AssertionError("replaying a running job must be a Conflict")


async def test_idempotency_key_returns_the_same_job_per_tenant(queue: Queue) -> None:
    a = await queue.submit(job(idempotency_key="k1"))
    b = await queue.submit(job(idempotency_key="k1", text="different"))
    c = await queue.submit(job(idempotency_key="k1", tenant="other"))
    assert b.id == a.id and b.body == a.body and c.id != a.id
    batch = await queue.submit_many([job(idempotency_key="k2"), job(idempotency_key="k2")])
    assert batch[0].id == batch[1].id
    assert len(await queue.list_jobs(JobFilter(limit=100))) == 3


async def test_cancel_queued_and_running(queue: Queue) -> None:
    queued = await queue.submit(job())
    running = await queue.submit(job())
    assert (await queue.cancel(queued.id)).status is JobStatus.CANCELLED
    (leased,) = await queue.lease("m", 10)
    assert leased.id == running.id
    assert (await queue.cancel(running.id)).status is JobStatus.CANCELLED
    assert await queue.complete([(leased, RESULT)]) == []
    assert (await queue.get(running.id)).result is None
    with contextlib.suppress(Conflict):
        await queue.cancel(queued.id)
        raise AssertionError("cancelling an ended job must be a Conflict")


async def test_release_hands_back_without_counting_the_attempt(queue: Queue) -> None:
    await queue.submit(job())
    leased = await queue.lease("m", 1)
    (released,) = await queue.release(leased)
    assert released.status is JobStatus.QUEUED and released.attempts == 0
    assert (await queue.lease("m", 1))[0].attempts == 1


async def test_jobs_not_started_before_expires_at_expire(
    make_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock(time.time() + 1)  # ahead of the jobs made below, which use real time
    async with make_queue(clock=clock) as queue:
        soon = await queue.submit(job(expires_at=clock() + 20))
        later = await queue.submit(job(expires_at=clock() + 600))
        clock.advance(30.0)
        assert [j.id for j in await queue.lease("m", 10)] == [later.id]
        assert (await queue.maintain())["expired"] == 1
        expired = await queue.get(soon.id)
    assert expired.status is JobStatus.EXPIRED and expired.error["code"] == "expired"


async def test_results_are_purged_after_ttl_but_dead_letters_stay(
    make_queue: Callable[..., Queue],
) -> None:
    clock = FakeClock(time.time() + 1)  # ahead of the jobs made below, which use real time
    q = make_queue(result_ttl_s=60.0, clock=clock)
    async with q:
        ok, dead = await q.submit(job()), await q.submit(job(max_attempts=1))
        leased = {j.id: j for j in await q.lease("m", 2)}
        await q.complete([(leased[ok.id], RESULT)])
        await q.fail([(leased[dead.id], ModelError("boom"))])
        clock.advance(61.0)
        assert (await q.maintain())["purged"] == 1
        with contextlib.suppress(NotFound):
            await q.get(ok.id)
            raise AssertionError("a result past its TTL must be gone")
        assert (await q.get(dead.id)).status is JobStatus.FAILED


async def test_list_filters_and_cursor_pagination(queue: Queue) -> None:
    ids = [(await queue.submit(job(model="a" if i % 2 else "b"))).id for i in range(7)]
    pages, cursor = [], None
    while True:
        page = await queue.list_jobs(JobFilter(model="a", before=cursor, limit=2))
        if not page:
            break
        pages.extend(j.id for j in page)
        cursor = page[-1].id
    assert pages == [i for i in reversed(ids) if ids.index(i) % 2]


async def test_depth_counts_waiting_and_running(queue: Queue) -> None:
    await queue.submit_many([job() for _ in range(4)] + [job(model="x")])
    await queue.lease("m", 1)
    depth = await queue.depth()
    assert depth["m"] == {"queued": 3, "running": 1} and depth["x"] == {"queued": 1}


async def test_events_follow_every_state_change(queue: Queue) -> None:
    stored = await queue.submit(job())
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        async for event in queue.subscribe([stored.id]):
            seen.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    (leased,) = await queue.lease("m", 1)
    await queue.complete([(leased, RESULT)])
    await asyncio.wait_for(listener, 5)
    assert [e.status for e in seen] == ["queued", "running", "succeeded"]
    assert seen[-1].result == RESULT


async def test_late_subscriber_gets_the_final_event_at_once(queue: Queue) -> None:
    stored = await queue.submit(job())
    (leased,) = await queue.lease("m", 1)
    await queue.complete([(leased, RESULT)])
    events = [e async for e in queue.subscribe([stored.id])]
    assert [e.status for e in events] == ["succeeded"] and events[0].result == RESULT


async def _lease_eventually(q: Queue, model: str, timeout: float = 5.0) -> Job:
    async with asyncio.timeout(timeout):
        while not (got := await q.lease(model, 1)):
            await asyncio.sleep(0.02)
    return got[0]


async def test_events_reach_a_subscriber_on_another_connection(
    make_queue: Callable[..., Queue],
) -> None:
    """A subscriber in one process sees the state changes that another process makes."""
    api, worker = make_queue(), make_queue()
    async with api, worker:
        stored = await api.submit(job())
        seen: list[dict[str, Any]] = []

        async def listen() -> None:
            async for event in api.subscribe([stored.id]):
                seen.append(event)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.1)
        leased = await _lease_eventually(worker, "m")
        await asyncio.sleep(0.3)
        await worker.complete([(leased, RESULT)])
        await asyncio.wait_for(listener, 5)
        assert [e.status for e in seen] == ["queued", "running", "succeeded"]
        assert seen[-1].result == RESULT


async def test_tenants_get_a_fair_share_of_equal_priority_work(queue: Queue) -> None:
    """A tenant that submits after another's backlog is served alongside it, not after it."""
    bulk = await queue.submit_many([job(tenant="bulk", text=f"b{i}") for i in range(6)])
    late = await queue.submit_many([job(tenant="late", text=f"l{i}") for i in range(2)])
    first = [j.id for j in await queue.lease("m", 4)]
    assert first == [bulk[0].id, late[0].id, bulk[1].id, late[1].id]
    rest = [j.id for j in await queue.lease("m", 10)]
    assert rest == [j.id for j in bulk[2:]]
    # and the vtime moved on: a newcomer now starts after what was already served
    newcomer = await queue.submit(job(tenant="new"))
    more = await queue.submit(job(tenant="bulk"))
    assert [j.id for j in await queue.lease("m", 10)] == [newcomer.id, more.id]


async def test_oldest_waiting_is_the_age_of_the_queue(queue: Queue) -> None:
    assert await queue.oldest_waiting() == {}
    first = await queue.submit(job(priority=1))
    await queue.submit_many([job(), job(model="x"), job(priority=5)])
    oldest = await queue.oldest_waiting()
    assert oldest["m"] == first.created_at and set(oldest) == {"m", "x"}
    for _ in range(3):
        await _lease_eventually(queue, "m")
    assert set(await queue.oldest_waiting()) == {"x"}


async def test_a_call_refused_before_the_model_uses_no_attempt(queue: Queue) -> None:
    stored = await queue.submit(job(max_attempts=1))
    (leased,) = await queue.lease("m", 1)
    (back,) = await queue.fail([(leased, CircuitOpen("breaker open", retry_after=0.2))])
    assert back.status is JobStatus.QUEUED and back.attempts == 0
    assert back.error is not None and back.error["code"] == "circuit_open"
    assert await queue.lease("m", 1) == []  # not before retry_after
    again = await _lease_eventually(queue, "m")
    assert again.id == stored.id and again.attempts == 1
