"""Processes whose clocks are off share one queue: leases, expiry and maintenance go by the
backend's clock, so none steals another's leases or expires jobs early (issue 14).

Before, each process used its own clock: a worker 10 s behind had every lease taken back by an
on-time worker's maintenance (50 of 50 jobs dead-lettered as "lease expired"), and a worker 60 s
ahead expired jobs 45 s early. Each test runs two or three queues on one backend namespace, as
processes on hosts with different clocks; the skews are fakes (:class:`SkewedClock`), as the
real servers share this machine's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from genspool.core.clock import ServerClock
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from tests.contract.test_coordination_contract import SkewedClock
from tests.helpers.backends import kind_url

CHAT = "/v1/chat/completions"
RESULT = {"status_code": 200, "body": {"object": "chat.completion", "choices": []}}
JOBS = 20


@pytest.fixture(params=["sqlite", "postgres", "redis", "nats", "redis+postgres"])
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def job(**kw: Any) -> Job:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return Job(url=CHAT, body=body, model="m", **kw)


def skewed(skew_s: float) -> ServerClock:
    """The clock a process on a host ``skew_s`` off uses: its local clock, corrected."""
    return ServerClock(SkewedClock(skew_s))


async def test_a_slow_workers_leases_are_not_taken_back(make_queue: Callable[..., Queue]) -> None:
    slow = make_queue(lease_s=5.0, clock=skewed(-10.0))
    on_time, fast = make_queue(), make_queue(clock=skewed(+60.0))
    async with slow, on_time, fast:
        await on_time.submit_many([job() for _ in range(JOBS)])
        leased = await slow.lease("m", JOBS)
        assert len(leased) == JOBS
        for other in (on_time, fast):
            assert (await other.maintain())["reclaimed"] == 0
        assert await slow.heartbeat(leased) == JOBS
        done = await slow.complete([(j, RESULT) for j in leased])
        assert len(done) == JOBS
        stored = await on_time.get_many([j.id for j in leased])
        assert {j.status for j in stored} == {JobStatus.SUCCEEDED}


async def test_a_fast_worker_does_not_expire_jobs_early(make_queue: Callable[..., Queue]) -> None:
    on_time, fast = make_queue(), make_queue(clock=skewed(+60.0))
    async with on_time, fast:
        deadline = time.time() + 30.0  # a client's expires_at, on the true time
        jobs = await on_time.submit_many([job(expires_at=deadline) for _ in range(JOBS)])
        assert (await fast.maintain())["expired"] == 0
        leased = await fast.lease("m", JOBS)  # not past expires_at, so still leasable
        assert sorted(j.id for j in leased) == sorted(j.id for j in jobs)


async def test_jobs_submitted_by_a_fast_process_are_due_at_once(
    make_queue: Callable[..., Queue],
) -> None:
    on_time, fast = make_queue(), make_queue(clock=skewed(+60.0))
    async with on_time, fast:
        jobs = await fast.submit_many([job() for _ in range(JOBS)])
        assert all(abs(j.created_at - time.time()) < 1.0 for j in jobs)
        leased = await on_time.lease("m", JOBS)
        assert sorted(j.id for j in leased) == sorted(j.id for j in jobs)


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
async def test_an_uncorrected_skewed_clock_steals_leases(
    make_queue: Callable[..., Queue],
) -> None:
    """The defect itself, with the skewed clocks given as they are (a clock passed as such is
    the clock, uncorrected): what the tests above would see without the backend's clock."""
    slow = make_queue(lease_s=5.0, clock=SkewedClock(-10.0))
    fast = make_queue(clock=SkewedClock(+60.0))
    async with slow, fast:
        await fast.submit_many([job(expires_at=time.time() + 30.0)])
        assert await slow.lease("m", 1) == []  # due only 70 s from now on the slow clock
        await slow.submit_many([job() for _ in range(JOBS)])
        leased = await slow.lease("m", JOBS)
        found = await fast.maintain()
        assert found["reclaimed"] == JOBS and found["expired"] == 1
        assert await slow.complete([(j, RESULT) for j in leased]) == []
