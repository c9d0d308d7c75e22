"""The backend interface: the primitives a queue and store must provide.

A backend moves jobs between states atomically and fences every write of a leased job by its
lease token, so a worker whose lease ran out can never overwrite the result of the worker that
took the job over. It makes no decisions: retries, timestamps that depend on policy, events and
metrics live once, above it, in :class:`genspool.core.queue.Queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from genspool.core.job import Job, JobStatus, Outcome

__all__ = ["Backend", "JobFilter", "gcra"]


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: JobStatus | None = None
    model: str | None = None
    tenant: str | None = None
    before: str | None = None  # cursor: ids strictly older than this one
    limit: int = 50


class Backend(ABC):
    """A durable queue plus job store. Subclasses fill the abstract primitives."""

    #: Whether events published by other processes reach this one by themselves. When False,
    #: subscribers poll the store for the jobs they watch.
    cross_process_events: bool = False
    #: How often an idle worker looks for work that another process enqueued.
    poll_interval_s: float = 0.1

    def __init__(self) -> None:
        self._wakeups: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and create the schema; idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def destroy(self) -> None:
        """Delete everything this backend stored under its URL (its namespace: a SQLite file,
        a PostgreSQL schema, a Redis key prefix, NATS streams and buckets). For tests and
        ``genspool reset``; the backend stays connected and empty."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs. A job whose (tenant, idempotency_key) exists yields the stored job."""

    @abstractmethod
    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        """Move up to ``limit`` ready jobs of ``model`` to running under one new lease token,
        highest priority first, then oldest; ``attempts`` goes up by one."""

    @abstractmethod
    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        """Push out the lease of ``(job_id, lease_token)`` pairs still held; returns how many."""

    @abstractmethod
    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        """Apply the outcomes whose lease is still held, atomically; returns their job ids.
        ``QUEUED`` releases a job without counting the attempt."""

    @abstractmethod
    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        """Running jobs whose lease ran out (their worker died or hung)."""

    @abstractmethod
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs that exist among ``job_ids``."""

    @abstractmethod
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """Jobs matching ``flt``, newest first."""

    @abstractmethod
    async def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a job that has not ended; None when it does not exist or already ended."""

    @abstractmethod
    async def replay(self, job_id: str, now: float) -> Job | None:
        """Queue a failed (dead-lettered) job again with a fresh attempt count."""

    @abstractmethod
    async def expire(self, now: float) -> list[Job]:
        """End waiting jobs whose ``expires_at`` has passed."""

    @abstractmethod
    async def purge(self, finished_before: float) -> int:
        """Delete ended jobs (not dead letters) that finished before the given time."""

    @abstractmethod
    async def depth(self) -> dict[str, dict[str, int]]:
        """Count of jobs per model and status, for ``queued``, ``retrying`` and ``running``."""

    async def drop(self) -> None:
        """Remove this backend's namespace altogether (tests); by default the same as
        :meth:`destroy`, for backends whose namespace leaves nothing behind when empty."""
        await self.destroy()

    # -- coordination across processes ------------------------------------------------------

    @abstractmethod
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        """Take one of ``limit`` slots of ``name`` for ``holder`` until ``now + ttl_s``; a holder
        that already has one renews it. Slots whose time ran out are free again (a dead
        worker's slots come back by themselves). Returns whether ``holder`` now holds a slot."""

    @abstractmethod
    async def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``name``; nothing when it holds none."""

    @abstractmethod
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        """Rate limit shared by every process: take ``cost`` units from the bucket ``key`` that
        refills at ``rate_per_s`` up to ``burst`` and return 0.0, or take nothing and return
        how many seconds until it would succeed. Atomic; the arithmetic is :func:`gcra`."""

    @abstractmethod
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        """Store a small value (API keys, breaker states) under ``(namespace, key)``."""

    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> bytes | None: ...

    @abstractmethod
    async def kv_list(self, namespace: str) -> dict[str, bytes]: ...

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove a value; returns whether it existed."""

    # Events across processes. Backends that set ``cross_process_events`` carry opaque payloads
    # (encoded by the queue facade) from ``broadcast`` in one process to ``listen`` in every
    # other process, their own included; the facade drops its own by an origin tag.

    async def broadcast(self, payload: bytes) -> None:  # noqa: B027 - optional hook
        """Send ``payload`` to every process's listener (best effort; subscribers also poll)."""

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        """Call ``deliver`` with every broadcast payload until cancelled; reconnect by itself."""
        await asyncio.Event().wait()

    @abstractmethod
    async def oldest_waiting(self) -> dict[str, float]:
        """Per model, the ``created_at`` of the oldest job waiting to run (queued or retrying),
        for load shedding by queue age. Backends that keep one line per priority may answer
        with the oldest job at the head of a line."""

    async def get(self, job_id: str) -> Job | None:
        found = await self.get_many([job_id])
        return found[0] if found else None

    # Wake-ups: an enqueue in this process wakes its idle lanes at once; work enqueued by other
    # processes is found by polling every ``poll_interval_s`` (backends with a notification
    # channel override ``wait_for_work``).

    def notify(self, model: str) -> None:
        self._wakeups[model].set()

    async def wait_for_work(self, model: str, timeout: float) -> None:
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, self.poll_interval_s))
        event.clear()


def gcra(
    tat: float | None, now: float, cost: float, rate_per_s: float, burst: float
) -> tuple[float, float]:
    """The generic cell rate algorithm: ``(new_tat, wait_s)`` from the stored theoretical
    arrival time ``tat``. ``wait_s == 0`` means allowed (store ``new_tat``); otherwise keep
    ``tat`` and retry after ``wait_s``. A cost above ``burst`` is let through once the bucket
    is full, so an oversize request is slowed, never refused forever."""
    interval = 1.0 / rate_per_s
    base = max(tat or now, now)
    new_tat = base + min(cost, burst) * interval
    allow_at = new_tat - burst * interval
    if allow_at - now > 1e-9:  # not a rounding error of the float sums above
        return (tat or now), allow_at - now
    return base + cost * interval, 0.0
