"""The state machine alone: what each transition allows, fences on, changes, and says it
changed (``Change.fields``, which a backend may write instead of every field)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import pytest

from genspool.core import machine
from genspool.core.job import HISTORY_LIMIT, Job, JobStatus
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


def test_replay_dead_letters_with_fresh_attempts_and_the_history_kept() -> None:
    job = leased_job()
    assert machine.replay(job, 200.0) is None
    machine.dead_letter(job, ERROR, 120.0)
    history = job.history
    change = machine.replay(job, 200.0)
    assert change is not None and change.status is JobStatus.FAILED
    assert (job.status, job.attempts, job.error, job.finished_at, job.available_at) == (
        JobStatus.QUEUED, 0, None, None, 200.0
    )  # fmt: skip
    assert job.history is history and "history" not in change.fields


@pytest.mark.parametrize("status", ["cancelled", "expired"])
def test_replay_cancelled_and_expired_jobs_without_their_deadline(status: str) -> None:
    job = Job(url="/v1/x", body={}, model="m", created_at=100.0, expires_at=150.0)
    ended = machine.cancel(job, 120.0) if status == "cancelled" else machine.expire(job, 160.0)
    assert ended is not None and job.status == status
    change = machine.replay(job, 200.0)
    assert change is not None and (change.status, change.lease_token) == (status, None)
    assert (job.status, job.expires_at, job.error, job.finished_at) == (
        JobStatus.QUEUED, None, None, None
    )  # fmt: skip
    assert {"expires_at", "error", "status"} <= set(change.fields) <= set(WRITTEN)


@pytest.mark.parametrize("status", ["queued", "retrying", "running", "succeeded"])
def test_replay_nothing_that_has_not_ended_or_succeeded(status: str) -> None:
    job = Job(url="/v1/x", body={}, model="m", status=JobStatus(status))
    assert machine.replay(job, 200.0) is None


def test_lease_records_the_worker() -> None:
    job = Job(url="/v1/x", body={}, model="m")
    machine.leased(job, machine.lease_spec("m", 1, now=110.0, lease_s=30.0, worker="host:1:ab"))
    assert job.worker == "host:1:ab"
    assert machine.leased(job, machine.lease_spec("m", 1, now=120.0, lease_s=30.0)).worker is None


def test_each_ended_attempt_is_appended_with_its_own_error() -> None:
    job = leased_job()
    machine.retry(job, ERROR, at=130.0, now=120.0)
    machine.leased(job, machine.lease_spec("m", 1, now=130.0, lease_s=30.0, worker="w2"))
    machine.release(job, at=150.0, error={"code": "circuit_open", "message": "open"}, now=140.0)
    machine.leased(job, machine.lease_spec("m", 1, now=150.0, lease_s=30.0, worker="w3"))
    machine.succeed(job, {"ok": True}, 160.0)
    assert job.error is None and job.attempts == 2
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in job.history] == [
        (1, None, "failed"), (2, "w2", "released"), (2, "w3", "succeeded")
    ]  # fmt: skip
    assert [(a["started_at"], a["ended_at"]) for a in job.history] == [
        (110.0, 120.0), (130.0, 140.0), (150.0, 160.0)
    ]  # fmt: skip
    assert [a["error"] for a in job.history] == [
        ERROR, {"code": "circuit_open", "message": "open"}, None
    ]  # fmt: skip


def test_a_transition_replaces_the_history_a_copy_may_share() -> None:
    job = leased_job()
    shared = job.history
    copy.copy(job)
    machine.dead_letter(job, ERROR, 120.0)
    assert shared == [] and len(job.history) == 1 and job.history is not shared


def test_cancel_ends_the_running_attempt_only() -> None:
    running, waiting = leased_job(), Job(url="/v1/x", body={}, model="m")
    machine.cancel(running, 120.0)
    machine.cancel(waiting, 120.0)
    assert [(a["outcome"], a["ended_at"]) for a in running.history] == [("cancelled", 120.0)]
    assert waiting.history == []


def test_history_keeps_the_last_attempts() -> None:
    job = leased_job()
    for n in range(HISTORY_LIMIT + 5):
        machine.release(job, at=200.0 + n)
        machine.leased(job, machine.lease_spec("m", 1, now=200.0 + n, lease_s=30.0))
    assert len(job.history) == HISTORY_LIMIT
    assert job.history[-1]["ended_at"] == 200.0 + HISTORY_LIMIT + 4
    assert job.history[0]["ended_at"] == 205.0


def test_expire_only_waiting_jobs_past_their_time() -> None:
    job = Job(url="/v1/x", body={}, model="m", expires_at=50.0)
    assert machine.expire(job, 49.0) is None
    change = machine.expire(job, 50.0)
    assert change is not None and job.status is JobStatus.EXPIRED
    assert job.error == machine.EXPIRED_ERROR and job.error is not machine.EXPIRED_ERROR
    assert machine.expire(leased_job(expires_at=50.0), 60.0) is None  # running: its worker's
