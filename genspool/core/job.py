"""The job: one OpenAI-style request with its queue options and its state.

A job is the shape of one line of the OpenAI Batch API (``{"url", "body"}``) plus queue options.
Its transitions are decided in :mod:`genspool.core.machine`; states::

    queued ──▶ running ──▶ succeeded | failed | cancelled
      │          │  ▲
      │          ▼  │
      │        retrying            (waiting out a backoff before the next attempt)
      ▼
    expired | cancelled            (not started before ``expires_at`` / cancelled while waiting)
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from genspool._ids import random_hex

__all__ = ["HISTORY_LIMIT", "TERMINAL", "WAITING", "Job", "JobStatus", "new_job_id", "now"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
WAITING = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})
#: Ended attempts a job keeps in its history (a job retried forever stays bounded).
HISTORY_LIMIT = 50


def now() -> float:
    return time.time()


def new_job_id() -> str:
    """A time-ordered id: sorting ids sorts jobs by submission, which cursor pagination uses."""
    return f"job_{time.time_ns():x}{random_hex(5)}"


@dataclass(slots=True)
class Job:
    url: str
    body: dict[str, Any]
    model: str
    id: str = field(default_factory=new_job_id)
    tenant: str = "default"
    status: JobStatus = JobStatus.QUEUED
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    created_at: float = field(default_factory=now)
    available_at: float = 0.0
    #: Order among waiting jobs of equal priority, lower first; the queue facade sets it to give
    #: tenants a fair share (genspool.core.fairness). Equal ranks fall back to available_at.
    rank: float = 0.0
    started_at: float | None = None
    retried_at: float | None = None
    finished_at: float | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    result: dict[str, Any] | None = None
    #: The error of the attempt that ended the job (or that it waits to retry after); None
    #: once it succeeded. Every attempt's own error is in ``history``.
    error: dict[str, Any] | None = None
    #: Who holds (or last held) the lease: the id of the worker that leased the job.
    worker: str | None = None
    #: The attempts that ended, oldest first, at most ``HISTORY_LIMIT`` (the oldest are
    #: dropped): ``attempt`` (the count it was), ``worker``, ``started_at``, ``ended_at``,
    #: ``outcome`` (succeeded, failed, released, cancelled) and ``error`` (that attempt's own).
    #: Each transition replaces the list, never changes it in place (copies share it).
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def timestamps(self) -> dict[str, float]:
        """When the job last entered each state it has been in."""
        stamps = {"queued": self.created_at}
        if self.started_at is not None:
            stamps["running"] = self.started_at
        if self.retried_at is not None:
            stamps["retrying"] = self.retried_at
        if self.finished_at is not None and self.terminal:
            stamps[self.status.value] = self.finished_at
        return stamps

    def attempt_history(self) -> list[dict[str, Any]]:
        """The ended attempts, then the one running now (``ended_at`` and ``outcome`` None)."""
        if self.status is not JobStatus.RUNNING:
            return list(self.history)
        running = {
            "attempt": self.attempts,
            "worker": self.worker,
            "started_at": self.started_at,
            "ended_at": None,
            "outcome": None,
            "error": None,
        }
        return [*self.history, running]

    def public(self, *, include: Collection[str] = ()) -> dict[str, Any]:
        """The job as the API shows it. ``include`` adds what a list leaves out for size:
        ``"request"`` (the submitted ``url`` and ``body``) and ``"history"`` (every attempt,
        oldest first). ``error`` is always there: the last attempt's, or None."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "job",
            "tenant": self.tenant,
            "status": self.status.value,
            "url": self.url,
            "model": self.model,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "metadata": self.metadata,
            "idempotency_key": self.idempotency_key,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "timestamps": self.timestamps(),
        }
        if self.result is not None:
            out["result"] = self.result
        out["error"] = self.error
        if "request" in include:
            out["request"] = {"url": self.url, "body": self.body}
        if "history" in include:
            out["history"] = self.attempt_history()
        return out
