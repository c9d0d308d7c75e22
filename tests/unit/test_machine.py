"""The state machine alone: what each transition allows, fences on, changes, and says it
changed (``Change.fields``, which a backend may write instead of every field)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import pytest

from genspool.core import machine
from genspool.core.job import Job, JobStatus
from genspool.core.machine import WRITTEN, Change

ERROR = {"code": "x", "message": "boom"}


def leased_job(**kw: object) -> Job:
    job = Job(url="/v1/chat/completions", body={}, model="m", created_at=100.0, **kw)  # type: ignore[arg-type]
    return machine.leased(job, machine.lease_spec("m", 1, now=110.0, lease_s=30.0))


def changed_fields(before: Job, after: Job) -> set[str]:
    return {
        f.name for f in dataclasses.fields(Job) if getattr(before, f.name) != getattr(after, f.name)
    }


TRANSITIONS: dict[str, Callable[[Job], Change | None]] = {
    "succeed": lambda j: machine.succeed(j, {"ok": True}, 120.0),
    "retry": lambda j: machine.retry(j, ERROR, at=130.0, now=120.0),
    "dead_letter": lambda j: machine.dead_letter(j, ERROR, 120.0),
    "release": lambda j: machine.release(j, at=120.0),
    "cancel": lambda j: machine.cancel(j, 120.0),
}


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
def test_a_change_names_every_field_it_changed_and_only_written_ones(name: str) -> None:
    job = leased_job()
    before = copy.copy(job)
    change = TRANSITIONS[name](job)
    assert change is not None and change.job is job
    assert changed_fields(before, job) <= set(change.fields) <= set(WRITTEN)
    assert (change.status, change.lease_token) == (JobStatus.RUNNING, before.lease_token)
    assert job.lease_token is None and job.lease_expires_at is None


def test_a_report_from_a_copy_that_holds_no_lease_can_never_match() -> None:
    job = leased_job()
    machine.succeed(job, {"ok": True}, 120.0)
    again = machine.succeed(job, {"ok": "twice"}, 121.0)
    assert (again.status, again.lease_token) == (JobStatus.RUNNING, "")


def test_lease_counts_an_attempt_and_release_gives_it_back() -> None:
    job = leased_job()
    assert (job.status, job.attempts, job.started_at) == (JobStatus.RUNNING, 1, 110.0)
    machine.release(job, at=125.0)
    assert (job.status, job.attempts, job.available_at) == (JobStatus.QUEUED, 0, 125.0)


def test_retry_waits_and_dead_letter_ends() -> None:
    retried, dead = leased_job(), leased_job()
    machine.retry(retried, ERROR, at=130.0, now=120.0)
    assert (retried.status, retried.available_at, retried.retried_at) == (
        JobStatus.RETRYING, 130.0, 120.0
    )  # fmt: skip
    assert retried.finished_at is None and retried.error == ERROR
    machine.dead_letter(dead, ERROR, 120.0)
    assert (dead.status, dead.finished_at, dead.error) == (JobStatus.FAILED, 120.0, ERROR)


def test_cancel_only_what_has_not_ended_and_fence_on_its_state() -> None:
    waiting = Job(url="/v1/x", body={}, model="m")
    change = machine.cancel(waiting, 5.0)
    assert change is not None and (change.status, change.lease_token) == (JobStatus.QUEUED, None)
    assert waiting.status is JobStatus.CANCELLED and waiting.finished_at == 5.0
    assert machine.cancel(waiting, 6.0) is None


def test_replay_only_dead_letters_with_fresh_attempts() -> None:
    job = leased_job()
    assert machine.replay(job, 200.0) is None
    machine.dead_letter(job, ERROR, 120.0)
    change = machine.replay(job, 200.0)
    assert change is not None and change.status is JobStatus.FAILED
    assert (job.status, job.attempts, job.error, job.finished_at, job.available_at) == (
        JobStatus.QUEUED, 0, None, None, 200.0
    )  # fmt: skip


def test_expire_only_waiting_jobs_past_their_time() -> None:
    job = Job(url="/v1/x", body={}, model="m", expires_at=50.0)
    assert machine.expire(job, 49.0) is None
    change = machine.expire(job, 50.0)
    assert change is not None and job.status is JobStatus.EXPIRED
    assert job.error == machine.EXPIRED_ERROR and job.error is not machine.EXPIRED_ERROR
    assert machine.expire(leased_job(expires_at=50.0), 60.0) is None  # running: its worker's
