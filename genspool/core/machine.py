"""The state machine of a job, decided here once for every backend.

Each transition reads a job as it is and returns the job as it must become. A backend does not
decide anything: it writes the new record atomically, on condition that the stored job is still
the one the decision was made on (same ``status`` and ``lease_token``: the fence). A worker whose
lease ran out, or a cancel that lost a race, therefore changes nothing. Only the lease itself is
done by the backend in bulk (it must pick the jobs atomically); :class:`LeaseSpec` hands it the
statuses and values to write, and :func:`leased` is the same rule for backends that apply it per
record::

                 lease                  succeed
    queued ───────────────▶ running ───────────────▶ succeeded
      ▲  │                   │  │ │      dead_letter
      │  │ release (attempt  │  │ └───────────────▶ failed ─────┐
      │  │ not counted) ◀────┘  │ retry                          │
      │  │                      ▼                                │
      │  │                   retrying ──── lease ───▶ running    │ replay
      │  ▼                                                       │ (failed, cancelled
      │ cancel (queued, retrying or running) ───────▶ cancelled ─┤  or expired)
      │ expire (queued or retrying, past expires_at) ▶ expired ──┤
      └──────────────────────────────────────────────────────────┘
        purge: ended jobs (not dead letters) finished before the result TTL are deleted

| transition  | from                      | to        | fields written                          |
|-------------|---------------------------|-----------|-----------------------------------------|
| lease       | queued, retrying          | running   | attempts + 1, started_at, lease, worker |
| succeed     | running (lease held)      | succeeded | result, error cleared, finished_at,     |
|             |                           |           | lease cleared, history + attempt        |
| retry       | running (lease held)      | retrying  | error, available_at, retried_at,        |
|             |                           |           | history + attempt                       |
| dead_letter | running (lease held)      | failed    | error, finished_at, history + attempt   |
| release     | running (lease held)      | queued    | attempts - 1, available_at, error,      |
|             |                           |           | history + attempt (released)            |
| cancel      | queued, retrying, running | cancelled | finished_at, lease cleared; history +   |
|             |                           |           | attempt when it was running             |
| replay      | failed, cancelled,        | queued    | attempts 0, result/error cleared,       |
|             | expired                   |           | expires_at cleared; history kept        |
| expire      | queued, retrying          | expired   | error, finished_at                      |

**History.** Every transition that ends a lease (succeed, retry, dead_letter, release, cancel of
a running job) appends the attempt it ended to ``Job.history``: its number, worker, start and
end, outcome and its own error; at most :data:`~genspool.core.job.HISTORY_LIMIT` are kept (the
oldest go). ``Job.error`` is only the latest: a success clears it. A replay keeps the history
(the attempts before it stay on record) and clears ``expires_at``: the deadline was for the
first start, and an expired job replayed with it would only expire again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genspool._ids import random_hex
from genspool.core.job import HISTORY_LIMIT, TERMINAL, WAITING, Job, JobStatus

__all__ = [
    "ACTIVE",
    "EXPIRED_ERROR",
    "PURGEABLE",
    "REPLAYABLE",
    "WRITTEN",
    "Change",
    "LeaseSpec",
    "cancel",
    "dead_letter",
    "expire",
    "lease_spec",
    "leased",
    "release",
    "replay",
    "retry",
    "succeed",
]

#: States a job can still leave by working: what ``depth`` counts and ``cancel`` accepts.
ACTIVE = frozenset({*WAITING, JobStatus.RUNNING})
#: Ended jobs that are deleted after the result TTL; dead letters (failed) are kept.
PURGEABLE = frozenset(TERMINAL - {JobStatus.FAILED})
#: Ended jobs that ``replay`` queues again.
REPLAYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
EXPIRED_ERROR: dict[str, Any] = {"code": "expired", "message": "not started before expires_at"}
#: Every field a transition may change; the rest of a job never changes after it is enqueued.
WRITTEN = (
    "status", "attempts", "available_at", "started_at", "retried_at", "finished_at",
    "lease_token", "lease_expires_at", "result", "error", "history", "expires_at",
)  # fmt: skip
_ENDED = ("status", "lease_token", "lease_expires_at")
_SUCCEEDED = (*_ENDED, "result", "error", "finished_at", "history")


@dataclass(frozen=True, slots=True)
class Change:
    """A decided transition: store ``job`` if the stored record still has ``status`` and
    ``lease_token`` (the fence); otherwise nothing happens. ``fields`` names what the
    transition changed: a backend may write only those (the others hold what is stored)."""

    job: Job
    status: JobStatus
    lease_token: str | None
    fields: tuple[str, ...] = ()  # set by every transition below; () would mean all of WRITTEN


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """What a backend's lease does to the jobs it picks: waiting jobs of ``model`` that are due
    (``available_at <= now``) and not past ``expires_at``, highest priority first, then lowest
    rank, then oldest ``available_at``; at most ``limit`` of them."""

    model: str
    limit: int
    now: float
    until: float
    token: str
    #: The id of the leasing worker, stored in ``Job.worker`` (None: not said).
    worker: str | None = None
    waiting: tuple[str, ...] = tuple(sorted(s.value for s in WAITING))
    running: str = JobStatus.RUNNING.value
    attempts_step: int = 1


def lease_spec(
    model: str, limit: int, now: float, lease_s: float, worker: str | None = None
) -> LeaseSpec:
    return LeaseSpec(model, limit, now, now + lease_s, random_hex(16), worker)


# Every transition below changes the job it is given in place and returns the Change: the copy
# is the caller's to give up (a worker's leased copy, a record just read). This runs once per
# job on the hot path, where a copy (dataclasses.replace, ~6 µs) would cost more than the write.


def leased(job: Job, spec: LeaseSpec) -> Job:
    """The job as a lease under ``spec`` leaves it (for backends that lease record by record)."""
    job.status = JobStatus.RUNNING
    job.attempts += spec.attempts_step
    job.started_at = spec.now
    job.lease_token, job.lease_expires_at = spec.token, spec.until
    job.worker = spec.worker
    return job


def _ended(
    job: Job, outcome: str, now: float, error: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The history with the attempt now ending appended: a new list (copies share the old)."""
    attempt = {
        "attempt": job.attempts,
        "worker": job.worker,
        "started_at": job.started_at,
        "ended_at": now,
        "outcome": outcome,
        "error": error,
    }
    if len(job.history) < HISTORY_LIMIT:
        return [*job.history, attempt]
    return [*job.history[len(job.history) - HISTORY_LIMIT + 1 :], attempt]


def _fence(job: Job, held: bool) -> tuple[JobStatus, str | None]:
    """The state the decision was made on. A transition that needs the lease (``held``) fences
    on it; a copy that holds none (say, one already reported) fences on a token no stored job
    has, so reporting twice changes nothing."""
    if not held:
        return job.status, job.lease_token
    if job.status is JobStatus.RUNNING and job.lease_token:
        return JobStatus.RUNNING, job.lease_token
    return JobStatus.RUNNING, ""


def _fenced(job: Job, status: JobStatus, *, held: bool = True, **fields: Any) -> Change:
    change = Change(job, *_fence(job, held), (*_ENDED, *fields))
    job.status, job.lease_token, job.lease_expires_at = status, None, None
    for name, value in fields.items():
        setattr(job, name, value)
    return change


def succeed(job: Job, result: dict[str, Any], now: float) -> Change:
    # Written out rather than through _fenced: the bulk of all transitions (~1 µs a job less).
    change = Change(job, *_fence(job, True), _SUCCEEDED)
    job.status, job.lease_token, job.lease_expires_at = JobStatus.SUCCEEDED, None, None
    job.result, job.error, job.finished_at = result, None, now
    job.history = _ended(job, "succeeded", now)
    return change


def dead_letter(job: Job, error: dict[str, Any], now: float) -> Change:
    history = _ended(job, "failed", now, error)
    return _fenced(
        job, JobStatus.FAILED, result=None, error=error, finished_at=now, history=history
    )


def retry(job: Job, error: dict[str, Any], at: float, now: float) -> Change:
    return _fenced(
        job,
        JobStatus.RETRYING,
        result=None,
        error=error,
        available_at=at,
        retried_at=now,
        finished_at=None,
        history=_ended(job, "failed", now, error),
    )


def release(
    job: Job, at: float, error: dict[str, Any] | None = None, now: float | None = None
) -> Change:
    """Back to the queue without counting the attempt (a draining worker, a call refused by a
    breaker or a rate limit before it was made); ``now`` (default ``at``) ends the attempt
    in the history."""
    return _fenced(
        job,
        JobStatus.QUEUED,
        attempts=max(job.attempts - 1, 0),
        result=None,
        error=error,
        available_at=at,
        finished_at=None,
        history=_ended(job, "released", at if now is None else now, error),
    )


def cancel(job: Job, now: float) -> Change | None:
    if job.status not in ACTIVE:
        return None
    if job.status is JobStatus.RUNNING:  # its attempt ends here (a late report is fenced off)
        history = _ended(job, "cancelled", now)
        return _fenced(job, JobStatus.CANCELLED, held=False, finished_at=now, history=history)
    return _fenced(job, JobStatus.CANCELLED, held=False, finished_at=now)


def replay(job: Job, now: float) -> Change | None:
    """Queue an ended job again (a dead letter, a cancelled or an expired job) with fresh
    attempts; its history stays."""
    if job.status not in REPLAYABLE:
        return None
    return _fenced(
        job,
        JobStatus.QUEUED,
        held=False,
        attempts=0,
        result=None,
        error=None,
        available_at=now,
        retried_at=None,
        finished_at=None,
        expires_at=None,
    )


def expire(job: Job, now: float) -> Change | None:
    if job.status not in WAITING or job.expires_at is None or job.expires_at > now:
        return None
    return _fenced(job, JobStatus.EXPIRED, held=False, error=dict(EXPIRED_ERROR), finished_at=now)
