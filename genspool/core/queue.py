"""The queue facade: what clients and workers do to jobs, on top of the storage roles.

Each public method reads what it needs, lets :mod:`genspool.core.machine` decide the
transition, has the :class:`~genspool.core.roles.JobQueue` write it under its fence, copies the
change into the :class:`~genspool.core.roles.JobStore` when that is a separate server, and
publishes the events (saq's ``Queue``). Time comes from ``clock``: by default the backend's
(:class:`~genspool.core.clock.ServerClock`), so that every process leases, expires and takes
back jobs on one clock; a test passes a fake clock of its own and shifts it instead of sleeping.

With a separate store the copy is a second write that a dead worker or a server restart can cut
off, so it converges instead of being trusted: the queue marks each job it writes in the same
atomic step (:class:`~genspool.core.roles.Outbox`), ``maintain`` copies the marked jobs' current
records and clears their marks, the queue purges no marked job, and when the queue's server has
lost its data (a new epoch) ``maintain`` puts the store's active jobs back into it. A copy that
fails where it is made is therefore only logged (:mod:`genspool.core.mirror`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from genspool.core import machine
from genspool.core.clock import ServerClock
from genspool.core.events import Event, EventHub, JobChanged, Subscription
from genspool.core.fairness import FairShare
from genspool.core.job import WAITING, Job
from genspool.core.joblog import log_failures, log_released
from genspool.core.machine import ACTIVE, PURGEABLE, WRITTEN, Change
from genspool.core.mirror import Mirror
from genspool.core.observe import Observer
from genspool.core.relay import Relay
from genspool.core.retry import RetryPolicy
from genspool.core.roles import JobFilter, JobQueue, Storage
from genspool.core.watch import GroupCommit, StorePoller
from genspool.exceptions import BackendError, Conflict, ModelError, NotFound

__all__ = ["Queue", "error_body"]

log = logging.getLogger(__name__)
#: The fields a transition may change, read in one call: a write that fails puts them back.
_WRITTEN_OF = operator.attrgetter(*WRITTEN)


def error_body(exc: BaseException) -> dict[str, Any]:
    """``code`` and ``message``, plus what an error carries in ``details`` (a fan-out's
    branches, an agent's steps), so that nothing done before the failure is lost."""
    code = getattr(exc, "code", type(exc).__name__)
    body = {"code": code, "message": str(exc) or type(exc).__name__}
    details = getattr(exc, "details", None)
    if isinstance(details, dict):
        body = {**details, **body}
    return body


class Queue:
    #: How often the store is read for the jobs subscribers watch, when changes made by other
    #: processes arrive only that way (the backend carries no events across processes).
    POLL_S = 0.25
    #: With cross-process events, how often the store is still read (lost-message safety net).
    SAFETY_POLL_S = 2.0
    #: Jobs that ``maintain`` expires or takes back per round trip.
    MAINTAIN_BATCH = 1000

    def __init__(
        self,
        storage: Storage | JobQueue,
        *,
        events: EventHub | None = None,
        retry: RetryPolicy | None = None,
        lease_s: float = 30.0,
        result_ttl_s: float = 86_400.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: None for the backend's time (the local clock corrected by an offset
        measured at :meth:`connect`), a :class:`ServerClock` to correct some other local
        clock the same way, or any other clock to use as it is (a test's fake clock)."""
        self.storage = storage if isinstance(storage, Storage) else Storage.of(storage)
        self.events = events or EventHub()
        self.retry = retry or RetryPolicy()
        self.lease_s = lease_s
        self.result_ttl_s = result_ttl_s
        self.clock: Callable[[], float] = ServerClock() if clock is None else clock
        self.relay = Relay(self.storage.signals, self.events.publish_many)
        self.fair = FairShare(self.storage.kv)
        self._jobs, self._store = self.storage.queue, self.storage.store
        #: Called with the jobs each write ended (succeeded, failed, cancelled, expired), after
        #: the write: webhooks (genspool.webhooks) enqueue their deliveries here. A hook that
        #: raises is logged; the jobs stay ended.
        self.on_ended: list[Callable[[Sequence[Job]], Awaitable[None]]] = []
        #: Told of each submit, lease and write made here (genspool.metrics replaces it).
        self.observer = Observer()
        self._mirrored = self.storage.mirrored
        self.mirror = Mirror(self.storage, uuid.uuid4().hex) if self._mirrored else None
        self._enqueue = GroupCommit(self._jobs.enqueue)
        self._poller = StorePoller(
            self._read,
            self.events.publish_many,
            lambda: self.SAFETY_POLL_S if self.broadcasts else self.POLL_S,
        )

    async def connect(self) -> None:
        await self.storage.connect()
        if self.storage.outbox is not None:
            await self.storage.outbox.epoch()  # marks from the first write on
        if isinstance(self.clock, ServerClock):
            coordination = self.storage.coordination
            name = getattr(coordination, "kind", type(coordination).__name__)
            self.clock.follow(coordination.server_time, name)
            await self.clock.start()
        if self.storage.signals.cross_process_events and not self.relay.running:
            self.relay.start()

    async def close(self) -> None:
        if isinstance(self.clock, ServerClock):
            await self.clock.stop()
        if self.relay.running:
            await self.relay.stop()
        await self.storage.close()

    async def __aenter__(self) -> Queue:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- events ------------------------------------------------------------------------------

    @property
    def broadcasts(self) -> bool:
        """Whether events go to other processes too (so there may be listeners we cannot see)."""
        return self.relay.running

    def publish(self, event: Event) -> None:
        self.publish_many([event])

    def publish_many(self, events: Iterable[Event]) -> None:
        """Deliver events to this process's subscribers and, when the deployment carries them,
        to every other process; never waits."""
        if self.relay.running:
            batch = list(events)
            self.events.publish_many(batch)
            self.relay.send(batch)
        else:
            self.events.publish_many(events)

    def wants_deltas(self, job_id: str) -> bool:
        """Whether a token delta of this job has a listener, in this process or, as announced,
        in another: workers send no deltas nobody reads (safe to call from any thread)."""
        return self.events.wants(job_id) or self.relay.watched_elsewhere(job_id)

    # -- writing -----------------------------------------------------------------------------

    async def _write(self, changes: Sequence[Change]) -> list[Job]:
        """Apply decided changes under their fences; the jobs written, copied to the store."""
        if not changes:
            return []
        written = await self._jobs.apply(changes)
        jobs = [c.job for c in changes if c.job.id in written]
        self.observer.written(jobs)
        await self._copy(jobs)
        if self.on_ended:
            await self._ended([j for j in jobs if j.terminal])
        return jobs

    async def _ended(self, jobs: Sequence[Job]) -> None:
        for hook in self.on_ended if jobs else ():
            try:
                await hook(jobs)
            except Exception:
                log.exception("a hook on %d ended job(s) failed", len(jobs))

    async def _copy(self, jobs: Sequence[Job]) -> None:
        """Copy what the queue just wrote into a separate store. The queue marked it, so a copy
        that fails here is made by ``maintain`` (a queue that keeps no marks raises)."""
        if not self._mirrored or not jobs:
            return
        try:
            await self._store.put(jobs)
        except BackendError as exc:
            if self.storage.outbox is None:
                raise
            log.warning("store copy of %d job(s) left to maintenance: %s", len(jobs), exc)

    async def _read(self, job_ids: Sequence[str]) -> list[Job]:
        """The queue's copy first (it is never older than the store's), then the store's."""
        found = await self._jobs.get_many(job_ids)
        if self._mirrored and len(found) < len(set(job_ids)):
            missing = set(job_ids) - {j.id for j in found}
            found += await self._store.get_many(sorted(missing))
        return found

    # -- clients -----------------------------------------------------------------------------

    async def submit(self, job: Job) -> Job:
        return (await self.submit_many([job]))[0]

    async def submit_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs (concurrent calls share one write); what is stored for each: the job
        itself, or the one already stored under its idempotency key. Each is stamped with this
        queue's clock: it becomes due then, on the clock every process leases by."""
        now = self.clock()
        for job in jobs:
            job.created_at = now
        await self.fair.assign(jobs)
        with self.observer.submitting(jobs):
            stored = await self._enqueue(jobs)
        new = [j for j, s in zip(jobs, stored, strict=True) if j is s]
        self.observer.submitted(new)
        await self._copy(new)
        self.publish_many(JobChanged.of(j) for j in new)
        return stored

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or NotFound when it does not exist or belongs to another tenant."""
        found = await self._read([job_id])
        if not found or (tenant is not None and found[0].tenant != tenant):
            raise NotFound(f"no job {job_id!r}")
        return found[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        return await self._read(job_ids)

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """From the store; with a separate one, each job as the queue has it (never older), so
        that a list agrees with ``get`` while a copy is on its way."""
        listed = await self._store.list_jobs(flt)
        if not self._mirrored or not listed:
            return listed
        live = {j.id: j for j in await self._jobs.get_many([j.id for j in listed])}
        fresh = [live.get(j.id, j) for j in listed]
        return [j for j in fresh if flt.status is None or j.status == flt.status]

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per model, how many jobs are queued, retrying and running."""
        return await self._jobs.depth(sorted(s.value for s in ACTIVE))

    async def oldest_waiting(self) -> dict[str, float]:
        return await self._jobs.oldest_waiting()

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        for _ in range(5):  # each lost race means the job moved on: decide again
            job = await self.get(job_id, tenant)
            change = machine.cancel(job, self.clock())
            if change is None:
                raise Conflict(
                    f"job {job_id} already ended as {job.status.value}; nothing to cancel"
                )
            if await self._write([change]):
                self.publish(JobChanged.of(change.job))
                return change.job
        return await self.get(job_id, tenant)

    async def replay(self, job_id: str, tenant: str | None = None) -> Job:
        job = await self.get(job_id, tenant)
        change = machine.replay(job, self.clock())
        if change is None:
            raise Conflict(
                f"job {job_id} is {job.status.value}; only failed, cancelled or expired jobs "
                "can be replayed"
            )
        if not await self._write([change]):
            raise Conflict(f"job {job_id} was replayed by someone else")
        self.storage.signals.notify(job.model)
        self.publish(JobChanged.of(change.job))
        return change.job

    # -- workers -----------------------------------------------------------------------------

    async def lease(self, model: str, limit: int, *, worker: str | None = None) -> list[Job]:
        """Up to ``limit`` due jobs of ``model``, now running under a new lease; ``worker``
        (the leasing worker's id) is recorded on each job and in its attempt history."""
        spec = machine.lease_spec(model, limit, self.clock(), self.lease_s, worker)
        jobs = await self._jobs.lease(spec)
        self.observer.leased(jobs)
        await self._copy(jobs)
        await self.fair.leased(model, jobs)
        self.publish_many(JobChanged.of(j) for j in jobs)
        return jobs

    async def heartbeat(self, jobs: Iterable[Job]) -> int:
        held = [(j.id, j.lease_token) for j in jobs if j.lease_token]
        return await self._jobs.extend(held, self.clock() + self.lease_s) if held else 0

    async def complete(self, done: Sequence[tuple[Job, dict[str, Any]]]) -> list[Job]:
        """Store results; a job whose lease was lost (or that was cancelled) keeps its state."""
        t, before = self.clock(), [(j, _WRITTEN_OF(j)) for j, _ in done]
        return await self._finish([machine.succeed(j, r, t) for j, r in done], before)

    async def fail(self, failed: Sequence[tuple[Job, BaseException]]) -> list[Job]:
        """Retry after a backoff, or dead-letter when attempts are used up or retrying is futile."""
        t, before = self.clock(), [(j, _WRITTEN_OF(j)) for j, _ in failed]
        written = await self._finish([self._failure(job, exc, t) for job, exc in failed], before)
        log_failures(written, failed, t)
        return written

    def _failure(self, job: Job, exc: BaseException, t: float) -> Change:
        err = error_body(exc)
        if isinstance(exc, ModelError) and not exc.counts_as_attempt:
            wait = exc.retry_after if exc.retry_after is not None else self.retry.backoff(1)
            return machine.release(job, t + wait, err, now=t)
        retryable = exc.retryable if isinstance(exc, ModelError) else True
        retry_after = exc.retry_after if isinstance(exc, ModelError) else None
        delay = self.retry.next_delay(
            job.attempts, job.max_attempts, retryable=retryable, retry_after=retry_after
        )
        if delay is None:
            reason = "not retryable" if not retryable else f"{job.attempts} attempts used"
            if retryable and self.retry.over_cap(retry_after):
                reason = (
                    f"Retry-After {retry_after:g} s is over "
                    f"max_retry_after_s={self.retry.max_retry_after_s:g}"
                )
            err["message"] = f"{err['message']} (dead-lettered: {reason})"
            return machine.dead_letter(job, err, t)
        return machine.retry(job, err, t + delay, t)

    async def release(
        self, jobs: Sequence[Job], *, why: str | None = "by its worker: draining or preempted"
    ) -> list[Job]:
        """Hand leased jobs back untouched (a draining worker); the attempt does not count.
        Each is logged with ``why``, unless it is None (a job leased only to be looked at)."""
        t, before = self.clock(), [(j, _WRITTEN_OF(j)) for j in jobs]
        released = await self._finish([machine.release(j, t) for j in jobs], before)
        if why is not None:
            log_released(released, why)
        return released

    async def _finish(
        self, changes: Sequence[Change], before: Sequence[tuple[Job, tuple[Any, ...]]]
    ) -> list[Job]:
        """Write a worker's decided changes. If the write raises, each job is put back as it
        was (the transitions change jobs in place), so the worker still holds its lease and
        can store another outcome or hand the job back."""
        try:
            changed = await self._write(changes)
        except BaseException:
            for job, values in before:
                for name, value in zip(WRITTEN, values, strict=True):
                    setattr(job, name, value)
            raise
        self.publish_many(JobChanged.of(j) for j in changed)
        for model in {j.model for j in changed if j.status in WAITING}:
            self.storage.signals.notify(model)
        return changed

    async def maintain(self) -> dict[str, int]:
        """Expire overdue jobs, take back leases of dead workers, bring a separate store up to
        the queue (and the queue up to the store after it lost its data), drop results past
        their TTL."""
        t = self.clock()
        expired = reclaimed = 0
        for _ in range(10):
            late = await self._jobs.overdue(t, self.MAINTAIN_BATCH)
            changes = [c for c in (machine.expire(j, t) for j in late) if c is not None]
            done = await self._write(changes)
            self.publish_many(JobChanged.of(j) for j in done)
            expired += len(done)
            if len(late) < self.MAINTAIN_BATCH:
                break
        orphans = await self._jobs.stale_leases(t, self.MAINTAIN_BATCH)
        lost = TimeoutError("lease expired: the worker holding the job stopped responding")
        reclaimed = len(await self.fail([(j, lost) for j in orphans]))
        if self.mirror is not None:  # its counts in ``mirror.last``: the report is the same
            await self.mirror.converge(t)  # for every deployment
        statuses = sorted(s.value for s in PURGEABLE)
        purged = await self._jobs.purge(statuses, t - self.result_ttl_s)
        if self._mirrored:  # after the queue's: a job the queue keeps stays in the store too
            purged = await self._store.purge(statuses, t - self.result_ttl_s)
        return {"expired": expired, "reclaimed": reclaimed, "purged": purged}

    # -- push --------------------------------------------------------------------------------

    def subscribe(
        self,
        ids: Iterable[str] | None,
        *,
        tenant: str | None = None,
        since: Iterable[Job] = (),
        deltas: bool = True,
    ) -> AsyncGenerator[Event, None]:
        """Events of the given jobs until each has ended; with ``None``, every job's events.

        Listening starts at the call, so a caller may subscribe before it submits. A job that
        already ended yields its final event at once. The current state of each job is read
        once at the start, except for the jobs in ``since``, whose state the caller knows (it
        just submitted them). Events published in this process arrive at once; changes made by
        other processes arrive as the backend carries them, or else by the store poll that
        this process shares among all its subscribers (every ``POLL_S``). With ``deltas=False``
        no token deltas come, and no worker streams tokens for this subscriber.
        """
        watched = None if ids is None else set(ids)
        known = {j.id: (j.status.value, j.attempts) for j in since if not j.terminal}
        sub = self.events.subscribe(watched, deltas=deltas)
        return self._stream(sub, watched, tenant, known)

    async def _stream(
        self,
        sub: Subscription,
        watched: set[str] | None,
        tenant: str | None,
        seen: dict[str, tuple[str, int]],
    ) -> AsyncGenerator[Event, None]:
        if sub.deltas:  # job changes go everywhere; deltas only where somebody listens
            self.relay.watch(watched)
        polled = set() if watched is None else set(watched)
        try:
            with sub:
                batch: list[Event] = []
                if polled:
                    unknown = polled - seen.keys()
                    batch = await self._poll(unknown, seen, tenant) if unknown else []
                    self._poller.watch(polled, seen)
                while True:
                    for event in batch:
                        if watched is not None and event.id not in watched:
                            continue
                        if isinstance(event, JobChanged):
                            state = (event.status, event.attempts)
                            if seen.get(event.id) == state:
                                continue  # already yielded, by a poll or by the hub
                            seen[event.id] = state
                        yield event
                        if watched is not None and event.ends:
                            watched.discard(event.id)
                            sub.discard(event.id)
                            if event.id in polled:  # nothing more to poll for (a fan-out's
                                polled.discard(event.id)  # thousand children end one by one)
                                self._poller.unwatch([event.id])
                    if watched is not None and not watched:
                        return
                    batch = [await sub.queue.get()]
        finally:
            self._poller.unwatch(polled)
            if sub.deltas:
                self.relay.unwatch(polled if watched is not None else None)

    async def _poll(
        self, watched: set[str], seen: dict[str, tuple[str, int]], tenant: str | None
    ) -> list[Event]:
        """The current state of each watched job that differs from what was last yielded."""
        jobs = {j.id: j for j in await self._read(sorted(watched))}
        events: list[Event] = []
        for job_id in sorted(watched):
            job = jobs.get(job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                events.append(JobChanged.not_found(job_id))
            elif seen.get(job_id) != (job.status.value, job.attempts):
                events.append(JobChanged.of(job))
        return events

    async def wait(
        self, job_id: str, timeout: float | None = None, tenant: str | None = None
    ) -> Job:
        """Block until the job ends and return it."""
        async with asyncio.timeout(timeout):
            events = self.subscribe([job_id], tenant=tenant, deltas=False)
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.ends:
                        break
        return await self.get(job_id, tenant)

    async def outcome(self, job: Job, timeout: float | None = None) -> JobChanged:
        """The terminal event of a job the caller just submitted (``job`` as ``submit``
        returned it): its status, result and error, with no read of the store unless the
        event has to be found by the store poll."""
        if job.terminal:  # an idempotent resubmission of a job that has ended
            return JobChanged.of(job)
        async with asyncio.timeout(timeout):
            events = self.subscribe([job.id], since=[job], deltas=False)
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, JobChanged) and event.ends:
                        return event
        raise AssertionError("a job's events end with a terminal one")  # pragma: no cover
