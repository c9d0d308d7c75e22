"""The queue facade: the one place where job state rules, retries and events live.

Public methods do the shared work (timestamps, the retry decision, events, tenant checks) and
call one backend primitive each, so every backend behaves the same way (saq's ``Queue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any

import orjson

from genspool.backends import Backend, JobFilter, backend_from_url
from genspool.core.events import EventHub, Subscription
from genspool.core.fairness import FairShare
from genspool.core.job import TERMINAL, Job, JobStatus, Outcome, now
from genspool.core.retry import RetryPolicy
from genspool.exceptions import Conflict, ModelError, NotFound

__all__ = ["Queue"]

log = logging.getLogger("genspool.queue")
Event = dict[str, Any]


def _apply(job: Job, o: Outcome, t: float) -> Job:
    """Bring the worker's copy of ``job`` to what the backend now holds after ``o``; in place,
    since this runs once per job on the hot path and the copy is the caller's to give up."""
    job.attempts -= o.status is JobStatus.QUEUED
    if o.status is JobStatus.RETRYING:
        job.retried_at = t
    if o.available_at is not None:
        job.available_at = o.available_at
    job.status, job.result, job.error = o.status, o.result, o.error
    job.lease_token = job.lease_expires_at = None
    job.finished_at = None if o.status in (JobStatus.QUEUED, JobStatus.RETRYING) else t
    return job


def error_body(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "code", type(exc).__name__)
    return {"code": code, "message": str(exc) or type(exc).__name__}


def _ends(event: Event) -> bool:
    """Whether a job event is the last one of its job (a token delta never is)."""
    return "delta" not in event and (event["status"] in TERMINAL or event["status"] == "not_found")


class Queue:
    #: With cross-process events, how often a subscriber still checks the store.
    SAFETY_POLL_S = 2.0
    #: How long another process's announcement that it listens to a job holds; subscribers
    #: announce again every third of it.
    WATCH_TTL_S = 60.0

    def __init__(
        self,
        backend: Backend,
        *,
        events: EventHub | None = None,
        retry: RetryPolicy | None = None,
        lease_s: float = 30.0,
        result_ttl_s: float = 86_400.0,
    ) -> None:
        self.backend = backend
        self.events = events or EventHub()
        self.retry = retry or RetryPolicy()
        self.lease_s = lease_s
        self.result_ttl_s = result_ttl_s
        self.origin = os.urandom(6).hex()
        self._origin_tag = self.origin.encode() + b" "
        self._remote_watch: dict[str, float] = {}  # job id or "*" -> watched until (monotonic)
        self._hellos = 0  # processes that joined since we started, each wanting announcements
        self.fair = FairShare(backend)
        self._outbox: asyncio.Queue[list[Event]] | None = None
        self._relays: list[asyncio.Task[None]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Queue:
        return cls(backend_from_url(url), **kwargs)

    async def connect(self) -> None:
        await self.backend.connect()
        if self.backend.cross_process_events and not self._relays:
            self._outbox = asyncio.Queue()
            self._relays = [
                asyncio.create_task(self._send_events(self._outbox)),
                asyncio.create_task(self.backend.listen(self._receive_events)),
            ]
            # Subscribers elsewhere announced what they watch before we were here: ask again.
            self._outbox.put_nowait([{"hello": self.origin}])

    async def close(self) -> None:
        if self._outbox is not None:
            with contextlib.suppress(TimeoutError):  # let queued events go out first
                await asyncio.wait_for(self._outbox.join(), 2.0)
        for task in self._relays:
            task.cancel()
        if self._relays:  # bounded: a driver that swallows the cancellation must not hang us
            await asyncio.wait(self._relays, timeout=2.0)
        self._relays, self._outbox = [], None
        await self.backend.close()

    # -- events ------------------------------------------------------------------------------

    @property
    def broadcasts(self) -> bool:
        """Whether events go to other processes too (so there may be listeners we cannot see)."""
        return self._outbox is not None

    def publish(self, event: Event) -> None:
        self.publish_many([event])

    def publish_many(self, events: Iterable[Event]) -> None:
        """Deliver events to this process's subscribers and, when the backend carries them,
        to every other process; never waits (the outbox is drained by a background task)."""
        if self._outbox is not None:
            batch = list(events)
            self.events.publish_many(batch)
            if batch:
                self._outbox.put_nowait(batch)
        else:
            self.events.publish_many(events)

    async def _send_events(self, outbox: asyncio.Queue[list[Event]]) -> None:
        while True:
            batch = await outbox.get()
            taken = 1
            while not outbox.empty() and len(batch) < 500:
                batch += outbox.get_nowait()
                taken += 1
            try:
                await self.backend.broadcast(self._origin_tag + orjson.dumps(batch))
            except Exception as exc:  # subscribers fall back to polling the store
                log.warning("could not broadcast %d events: %s", len(batch), exc)
            for _ in range(taken):
                outbox.task_done()

    def _receive_events(self, payload: bytes) -> None:
        if payload.startswith(self._origin_tag):
            return  # our own, back from the server: already delivered here
        try:
            events = orjson.loads(payload.partition(b" ")[2])
        except orjson.JSONDecodeError:
            log.warning("ignoring a broadcast that is not a genspool event batch")
            return
        until = time.monotonic() + self.WATCH_TTL_S
        for event in events:
            for job_id in event.get("watch", ()):
                self._remote_watch[job_id] = until
            self._hellos += "hello" in event
        self.events.publish_many(e for e in events if "id" in e)
        if len(self._remote_watch) > 10_000:
            now_ = time.monotonic()
            self._remote_watch = {k: v for k, v in self._remote_watch.items() if v > now_}

    def wants_deltas(self, job_id: str) -> bool:
        """Whether a token delta of this job has a listener, in this process or, as announced,
        in another: workers send no deltas nobody reads (safe to call from any thread)."""
        if self.events.wants(job_id):
            return True
        if not self._remote_watch:
            return False
        t = time.monotonic()
        return self._remote_watch.get(job_id, 0.0) > t or self._remote_watch.get("*", 0.0) > t

    def _announce(self, watched: set[str] | None) -> None:
        """Tell the other processes which jobs a subscriber here listens to (``*``: all)."""
        if self._outbox is not None:
            self._outbox.put_nowait([{"watch": ["*"] if watched is None else sorted(watched)}])

    async def __aenter__(self) -> Queue:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- clients -----------------------------------------------------------------------------

    async def submit(self, job: Job) -> Job:
        return (await self.submit_many([job]))[0]

    async def submit_many(self, jobs: Sequence[Job]) -> list[Job]:
        await self.fair.assign(jobs)
        stored = await self.backend.enqueue(jobs)
        self.publish_many(j.event() for j, s in zip(jobs, stored, strict=True) if j is s)
        return stored

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or NotFound when it does not exist or belongs to another tenant."""
        job = await self.backend.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"no job {job_id!r}")
        return job

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        return await self.backend.list_jobs(flt)

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        job = await self.get(job_id, tenant)
        if job.terminal:
            raise Conflict(f"job {job_id} already ended as {job.status.value}; nothing to cancel")
        cancelled = await self.backend.cancel(job_id, now())
        if cancelled is None:  # it ended between the read and the write
            return await self.get(job_id, tenant)
        self.publish(cancelled.event())
        return cancelled

    async def replay(self, job_id: str, tenant: str | None = None) -> Job:
        job = await self.get(job_id, tenant)
        if job.status is not JobStatus.FAILED:
            raise Conflict(f"job {job_id} is {job.status.value}; only failed jobs can be replayed")
        replayed = await self.backend.replay(job_id, now())
        if replayed is None:
            raise Conflict(f"job {job_id} was replayed by someone else")
        self.backend.notify(replayed.model)
        self.publish(replayed.event())
        return replayed

    # -- workers -----------------------------------------------------------------------------

    async def lease(self, model: str, limit: int) -> list[Job]:
        jobs = await self.backend.lease(model, limit, self.lease_s, now())
        await self.fair.leased(model, jobs)
        self.publish_many(j.event() for j in jobs)
        return jobs

    async def heartbeat(self, jobs: Iterable[Job]) -> int:
        held = [(j.id, j.lease_token) for j in jobs if j.lease_token]
        return await self.backend.extend(held, now() + self.lease_s) if held else 0

    async def complete(self, done: Sequence[tuple[Job, dict[str, Any]]]) -> list[Job]:
        """Store results; a job whose lease was lost (or that was cancelled) keeps its state."""
        return await self._finish(
            [
                (j, Outcome(j.id, j.lease_token or "", JobStatus.SUCCEEDED, result=r))
                for j, r in done
            ]
        )

    async def fail(self, failed: Sequence[tuple[Job, BaseException]]) -> list[Job]:
        """Retry after a backoff, or dead-letter when attempts are used up or retrying is futile."""
        return await self._finish([(job, self._failure(job, exc, now())) for job, exc in failed])

    def _failure(self, job: Job, exc: BaseException, t: float) -> Outcome:
        token = job.lease_token or ""
        if isinstance(exc, ModelError) and not exc.counts_as_attempt:
            wait = exc.retry_after if exc.retry_after is not None else self.retry.backoff(1)
            return Outcome(
                job.id, token, JobStatus.QUEUED, error=error_body(exc), available_at=t + wait
            )
        retryable = exc.retryable if isinstance(exc, ModelError) else True
        retry_after = exc.retry_after if isinstance(exc, ModelError) else None
        delay = self.retry.next_delay(
            job.attempts, job.max_attempts, retryable=retryable, retry_after=retry_after
        )
        err = error_body(exc)
        if delay is None:
            reason = "not retryable" if not retryable else f"{job.attempts} attempts used"
            err["message"] = f"{err['message']} (dead-lettered: {reason})"
            return Outcome(job.id, token, JobStatus.FAILED, error=err)
        return Outcome(job.id, token, JobStatus.RETRYING, error=err, available_at=t + delay)

    async def release(self, jobs: Sequence[Job]) -> list[Job]:
        """Hand leased jobs back untouched (a draining worker); the attempt does not count."""
        t = now()
        return await self._finish(
            [
                (j, Outcome(j.id, j.lease_token or "", JobStatus.QUEUED, available_at=t))
                for j in jobs
            ]
        )

    async def _finish(self, pairs: Sequence[tuple[Job, Outcome]]) -> list[Job]:
        if not pairs:
            return []
        t = now()
        applied = await self.backend.finish([o for _, o in pairs], t)
        changed = [_apply(job, o, t) for job, o in pairs if job.id in applied]
        self.publish_many(j.event() for j in changed)
        for model in {j.model for j in changed if j.status is not JobStatus.SUCCEEDED}:
            self.backend.notify(model)
        return changed

    async def maintain(self) -> dict[str, int]:
        """Expire overdue jobs, take back leases of dead workers, drop results past their TTL."""
        t = now()
        expired = await self.backend.expire(t)
        self.publish_many(j.event() for j in expired)
        orphans = await self.backend.expired_leases(t, 1000)
        lost = TimeoutError("lease expired: the worker holding the job stopped responding")
        reclaimed = await self.fail([(j, lost) for j in orphans])
        purged = await self.backend.purge(t - self.result_ttl_s)
        return {"expired": len(expired), "reclaimed": len(reclaimed), "purged": purged}

    # -- push --------------------------------------------------------------------------------

    def subscribe(
        self, ids: Iterable[str] | None, *, tenant: str | None = None, poll_s: float = 0.25
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events of the given jobs until each has ended; with ``None``, every job's events.

        Listening starts at the call, so a caller may subscribe before it submits. A job that
        already ended yields its final event at once. Events published in this process arrive
        immediately; changes made by other processes are found by polling the store every
        ``poll_s`` when the backend does not carry events across processes.
        """
        watched = None if ids is None else set(ids)
        return self._stream(self.events.subscribe(watched), watched, tenant, poll_s)

    async def _stream(
        self, sub: Subscription, watched: set[str] | None, tenant: str | None, poll_s: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.SAFETY_POLL_S
        next_announce = loop.time() + self.WATCH_TTL_S / 3
        seen: dict[str, tuple[str, int]] = {}
        self._announce(watched)
        hellos = self._hellos
        with sub:
            batch = [] if watched is None else await self._poll(watched, seen, tenant)
            while True:
                for event in batch:
                    if watched is not None and event["id"] not in watched:
                        continue
                    if "delta" not in event:
                        state = (event["status"], event.get("attempts", 0))
                        if seen.get(event["id"]) == state:
                            continue  # already yielded, by a poll or by the hub
                        seen[event["id"]] = state
                    yield event
                    if watched is not None and _ends(event):
                        watched.discard(event["id"])
                        sub.discard(event["id"])
                if watched is not None and not watched:
                    return
                if loop.time() > next_announce or hellos != self._hellos:
                    next_announce, hellos = loop.time() + self.WATCH_TTL_S / 3, self._hellos
                    self._announce(watched)
                try:
                    batch = [await asyncio.wait_for(sub.queue.get(), poll_s)]
                except TimeoutError:
                    # With events carried across processes the poll is only a safety net for
                    # a message lost while a connection was down, so it runs less often.
                    if watched is None or (self.broadcasts and loop.time() < next_poll):
                        batch = []
                        continue
                    next_poll = loop.time() + self.SAFETY_POLL_S
                    batch = await self._poll(watched, seen, tenant)

    async def _poll(
        self, watched: set[str], seen: dict[str, tuple[str, int]], tenant: str | None
    ) -> list[dict[str, Any]]:
        """The current state of each watched job that differs from what was last yielded."""
        jobs = {j.id: j for j in await self.backend.get_many(sorted(watched))}
        events = []
        for job_id in sorted(watched):
            job = jobs.get(job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                error = {"code": "not_found", "message": f"no job {job_id!r}"}
                events.append({"id": job_id, "status": "not_found", "error": error})
            elif seen.get(job_id) != (job.status.value, job.attempts):
                events.append(job.event())
        return events

    async def wait(
        self, job_id: str, timeout: float | None = None, tenant: str | None = None
    ) -> Job:
        """Block until the job ends and return it."""
        async with asyncio.timeout(timeout):
            events = self.subscribe([job_id], tenant=tenant)
            async with contextlib.aclosing(events):
                async for event in events:
                    if event["status"] in TERMINAL or event["status"] == "not_found":
                        break
        return await self.get(job_id, tenant)
