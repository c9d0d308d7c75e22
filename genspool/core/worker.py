"""The worker: leases jobs per model, runs them, stores each job's outcome as soon as it exists.

One *lane* per served model. A lane starts jobs through :meth:`Provider.start`, which gives one
future per job, and stores every answer the moment it resolves (answers that arrive together
are stored together). Each job has its own time limit: ``timeout_s`` from its own start; a job
past it is cancelled and failed alone, the jobs beside it go on.

* **Batch providers** (remote HTTP models, embeddings, plugins): at most ``max_concurrency``
  batches in flight, each up to ``max_batch_size`` jobs. When nothing of the model is in flight
  here, the first jobs start at once; while the lane is busy, a batch is gathered for up to
  ``max_wait_ms`` (dynamic batching).
* **Continuous providers** (local llama.cpp, :func:`~genspool.providers.base.continuous`): the
  lane keeps the running batch fed. Whenever a sequence frees, it leases jobs for the free
  sequences (``max_sequences``) and starts them at once, each joining the running batch.
  Here the unit of ``max_concurrency`` is one running batch (one process's engine): a process
  takes one of the model's slots when its batch starts and keeps it until the batch runs empty.
* **Priority** (continuous lanes): while every sequence is busy, the lane looks at the newest
  ``preempt_scan`` waiting jobs every ``preempt_check_s`` (0.5 s). If one outranks the
  lowest-priority running job, that job is handed back to the queue (its attempt not counted;
  it starts over later) and the best waiting job takes its sequence at the next decode step.
  So a job that outranks a running one waits at most ``preempt_check_s`` plus one decode step
  (and its own prefill) for a sequence, unless more than ``preempt_scan`` jobs arrive within
  one ``preempt_check_s`` after it.

A job this process holds is being worked on or handed back: an error between its lease and its
outcome's store (the backend failing while a batch is filled, a provider that cannot start it)
hands back every job of that batch, or runs the ones already leased. The heartbeat renews only
jobs with a live attempt (a call in flight); a held job found without one on two heartbeats in a
row is handed back, so no bug can keep a job ``running`` with no call made. A maintenance loop
expires overdue jobs, takes back the jobs of dead workers and publishes the measured decode
rates (:mod:`genspool.core.decode_rate`). ``stop()`` drains: no new leases, in-flight jobs get
``drain_timeout_s`` to finish, what is left is handed back.

A job cancelled while it runs here is stopped at once: the worker listens to the events of the
jobs it runs (which the relay brings from every process) and, where the backend carries no
events between processes, also reads their states every ``cancel_poll_s``. Its future is
cancelled, so a continuous provider drops the sequence at the next decode step and a remote call
closes its connection; nothing is stored for it (the cancel already was).

Providers that act on the queue themselves (fan-out coordinators, agents) get it, and the
models, through a ``bind(queue, models)`` method, called once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from genspool._storable import Unstorable, UnstorableResult, storable
from genspool.config import ModelConfig
from genspool.core.decode_rate import DecodeRates, completion_tokens
from genspool.core.events import JobChanged, Subscription, TokenDelta
from genspool.core.job import Job, JobStatus
from genspool.core.models import Models, prompt_tokens
from genspool.core.presence import WorkerSeen, announce, withdraw
from genspool.core.queue import Queue
from genspool.core.roles import JobFilter
from genspool.core.slots import Slots
from genspool.exceptions import ModelError, ModelTimeout
from genspool.providers.base import (
    FileAccess,
    JobRef,
    Provider,
    Request,
    Result,
    TokenSink,
    continuous,
    max_sequences,
)

__all__ = ["Worker"]

log = logging.getLogger("genspool.worker")


@dataclass(eq=False)
class _Run:
    """A job in flight: the future of its answer and when it started (loop time)."""

    job: Job
    future: asyncio.Future[Result]
    started: float


@dataclass(eq=False)
class _Lane:
    """What one model has in flight in this process."""

    cfg: ModelConfig
    provider: Provider
    runs: dict[str, _Run] = field(default_factory=dict)
    preempted: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)  # stopped because the job was cancelled
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    batches: int = 0  # batches in flight (batch providers)

    def capacity(self) -> int:
        return max_sequences(self.provider) or self.cfg.batching.max_batch_size


class Worker:
    def __init__(
        self,
        queue: Queue,
        registry: Models,
        *,
        models: Sequence[str] | None = None,
        maintain_s: float = 1.0,
        drain_timeout_s: float = 30.0,
        files: FileAccess | None = None,
    ) -> None:
        self.queue = queue
        self.registry = registry
        #: The Files API's files, for the endpoints that read or write one (None: none here).
        self.files = files
        self.models = [registry.config(m) for m in models] if models else list(registry)
        self.maintain_s = maintain_s
        self.drain_timeout_s = drain_timeout_s
        self.held: dict[str, Job] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.completed = 0
        self._providers: dict[str, Provider] = {}
        self._slots: list[Slots] = []  # one per model
        self._lanes: list[_Lane] = []
        self._idle: set[str] = set()  # held jobs the last heartbeat found with no call in flight
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._started_at = queue.clock()
        self.slot_poll_s = 0.05
        self.preempt_check_s = 0.5
        #: How many of the newest waiting jobs a full continuous lane looks at for priority.
        self.preempt_scan = 20
        self.rates = DecodeRates(queue.storage.kv, clock=queue.clock)
        #: Without events between processes, how often running jobs are read for cancels.
        self.cancel_poll_s = 0.5
        self._watch: Subscription | None = None

    def stop(self) -> None:
        """Begin draining; ``run()`` returns once in-flight work is finished or handed back."""
        self._stopping.set()

    async def start(self) -> None:
        """Build the providers and load their weights; raises if a model cannot be served."""
        if self.ready.is_set():
            return
        self._providers = {cfg.name: self.registry.provider(cfg.name) for cfg in self.models}
        for provider in self._providers.values():
            bind = getattr(provider, "bind", None)
            if callable(bind):
                bind(self.queue, self.registry)
        await asyncio.gather(*(p.load() for p in self._providers.values()))
        self.ready.set()
        log.info("worker serving %s", ", ".join(self._providers))

    async def run(self) -> None:
        """Serve until ``stop()``; then drain."""
        await self.start()
        loops = [
            asyncio.create_task(self._lane(cfg, self._providers[cfg.name])) for cfg in self.models
        ]
        loops += [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._maintain())]
        loops.append(asyncio.create_task(self._cancels()))
        if not self.queue.storage.signals.cross_process_events:
            loops.append(asyncio.create_task(self._poll_cancels()))
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await self._drain(loops)

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        with contextlib.suppress(Exception):  # the backend is down: the record goes stale
            await withdraw(self.queue.storage.kv, self.id)
        if self._batches:
            _, pending = await asyncio.wait(self._batches, timeout=self.drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.held:
            released = await self.queue.release(list(self.held.values()))
            log.info("drained: handed back %d unfinished jobs", len(released))
            self.held.clear()
        for slots in self._slots:
            await self._quietly(slots.release_all())

    # -- leasing -----------------------------------------------------------------------------

    async def _lane(self, cfg: ModelConfig, provider: Provider) -> None:
        slots = Slots(
            self.queue.storage.coordination, cfg.name, cfg.batching.max_concurrency, owner=self.id,
            ttl_s=self.queue.lease_s,
        )  # fmt: skip
        self._slots.append(slots)
        lane = _Lane(cfg, provider)
        self._lanes.append(lane)
        if continuous(provider):
            await self._feed(lane, slots)
        else:
            await self._batch_lane(lane, slots)

    async def _batch_lane(self, lane: _Lane, slots: Slots) -> None:
        """Lease and start batches of one model, each under one of the model's slots: at most
        ``max_concurrency`` batches run at once across every worker process."""
        cfg = lane.cfg
        local = asyncio.Semaphore(cfg.batching.max_concurrency)
        while not self._stopping.is_set():
            await local.acquire()
            slot = None
            try:
                slot = await slots.take()
                jobs = await self._gather(lane) if slot is not None else []
            except Exception as exc:
                log.error("leasing for %s failed (%s); retrying in 1 s", cfg.name, exc)
                jobs = []
                await asyncio.sleep(1.0)
            if slot is None or not jobs:
                local.release()
                if slot is None:
                    await asyncio.sleep(self.slot_poll_s)  # the model is busy elsewhere
                else:
                    await self._quietly(slots.put(slot, worked=False))
                continue
            lane.batches += 1
            self._launch(self._run_under(lane, jobs, slots, slot, local))
            # Let the batch make its call before this loop takes the next slot and lease: both
            # may run without yielding (SQLite answers inline), which held every call back.
            await asyncio.sleep(0)

    async def _feed(self, lane: _Lane, slots: Slots) -> None:
        """Keep a continuous provider's sequences busy: lease jobs the moment sequences free,
        under one slot of the model while anything runs here."""
        cfg, loop = lane.cfg, asyncio.get_running_loop()
        slot: str | None = None
        used = False  # whether the slot held now has run any job
        checked = 0.0
        while not self._stopping.is_set():
            lane.freed.clear()
            jobs: list[Job] = []
            try:
                room = lane.capacity() - len(lane.runs)
                if room <= 0:
                    if loop.time() - checked >= self.preempt_check_s:
                        checked = loop.time()
                        await self._preempt(lane)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lane.freed.wait(), self.preempt_check_s)
                    continue
                if slot is None and (slot := await slots.take()) is None:
                    await asyncio.sleep(self.slot_poll_s)  # the model is busy elsewhere
                    continue
                jobs = await self._lease(cfg, room)
            except Exception as exc:
                log.error("leasing for %s failed (%s); retrying in 1 s", cfg.name, exc)
                await asyncio.sleep(1.0)
                continue
            if jobs:
                self._begin(lane, jobs)
                used = True
                continue
            if not lane.runs and slot is not None:  # the batch ran empty: free the slot
                await self._quietly(slots.put(slot, worked=used))
                slot, used = None, False
            await self.queue.storage.signals.wait_for_work(cfg.name, 1.0)

    async def _preempt(self, lane: _Lane) -> None:
        """Every sequence is busy: if a waiting job outranks the lowest-priority running one,
        that one is handed back and the best waiting job takes its place.

        The newest waiting jobs are read, not leased, to look: leasing and handing back a job
        that outranks nothing would move it behind its peers and write its history."""
        victim = min(lane.runs.values(), key=lambda r: (r.job.priority, -r.started), default=None)
        if victim is None or victim.job.id in lane.preempted:
            return
        look = JobFilter(status=JobStatus.QUEUED, model=lane.cfg.name, limit=self.preempt_scan)
        if all(j.priority <= victim.job.priority for j in await self.queue.list_jobs(look)):
            return
        candidates = await self._lease(lane.cfg, 1)
        if not candidates:
            return
        best = candidates[0]
        if best.priority <= victim.job.priority:  # another worker took the one we saw: run it
            self._begin(lane, [best])
            return
        log.info(
            "model %s: job %s (priority %d) takes the place of job %s (priority %d)",
            lane.cfg.name, best.id, best.priority, victim.job.id, victim.job.priority,
        )  # fmt: skip
        lane.preempted.add(victim.job.id)
        victim.future.cancel()  # its sequence leaves at the next decode step
        self._begin(lane, [best])

    def _begin(self, lane: _Lane, jobs: list[Job]) -> None:
        """Start ``jobs`` on a continuous provider now (so ``lane.runs`` counts them at once)."""
        wrong = [j for j in jobs if j.url not in lane.provider.endpoints]
        if wrong:
            self._launch(self._settled(lane, [(j, _unserved(j, lane.cfg)) for j in wrong]))
        if served := [j for j in jobs if j.url in lane.provider.endpoints]:
            try:
                runs = self._start(lane, served)
            except Exception as exc:
                log.error(
                    "model %s could not start %d jobs", lane.cfg.name, len(served), exc_info=exc
                )
                self._launch(self._hand_back(served, f"its model could not start it: {exc}"))
                return
            self._launch(self._settle(lane, runs))

    def _launch(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_under(
        self, lane: _Lane, jobs: list[Job], slots: Slots, slot: str, local: asyncio.Semaphore
    ) -> None:
        try:
            await self._run_batch(lane, jobs)
        except Exception as exc:
            log.error("model %s: a batch of %d failed", lane.cfg.name, len(jobs), exc_info=exc)
            await self._hand_back(jobs, f"its batch failed in the worker: {exc}")
        finally:
            lane.batches -= 1
            local.release()
            await self._quietly(slots.put(slot, worked=True))

    @staticmethod
    async def _quietly(step: Awaitable[None]) -> None:
        """Give back a slot; if the backend is down, its time runs out by itself."""
        try:
            await step
        except Exception as exc:
            log.warning("could not give back a slot: %s", exc)

    async def _gather(self, lane: _Lane) -> list[Job]:
        """Lease a batch: wait for a first job; if the lane is idle, start at once, else wait
        up to ``max_wait_ms`` to fill it."""
        cfg = lane.cfg
        size = cfg.batching.max_batch_size
        jobs = await self._lease(cfg, size)
        if not jobs:
            await self.queue.storage.signals.wait_for_work(cfg.name, 1.0)
            return []
        if not lane.batches:
            return jobs  # nothing of this model in flight: no reason to wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.batching.max_wait_ms / 1000
        try:
            while len(jobs) < size and (left := deadline - loop.time()) > 0:
                await self.queue.storage.signals.wait_for_work(cfg.name, left)
                jobs += await self._lease(cfg, size - len(jobs))
        except Exception as exc:  # the jobs leased so far run; the lane's loop retries
            log.error("filling a batch of %s failed (%s); running %d", cfg.name, exc, len(jobs))
        return jobs

    async def _lease(self, cfg: ModelConfig, limit: int) -> list[Job]:
        if self._stopping.is_set():
            return []
        jobs = await self.queue.lease(cfg.name, limit, worker=self.id)
        self.held.update((j.id, j) for j in jobs)
        return jobs

    # -- running -----------------------------------------------------------------------------

    async def _run_batch(self, lane: _Lane, jobs: list[Job]) -> None:
        endpoints = lane.provider.endpoints
        wrong = [j for j in jobs if j.url not in endpoints]
        if wrong:
            await self._settled(lane, [(j, _unserved(j, lane.cfg)) for j in wrong])
        served = [j for j in jobs if j.url in endpoints]
        for url in sorted({j.url for j in served}):
            await self._settle(lane, self._start(lane, [j for j in served if j.url == url]))

    def _start(self, lane: _Lane, jobs: list[Job]) -> list[_Run]:
        requests = [
            Request(
                j.url, j.body, sink := self._token_sink(j), prompt_tokens(j.metadata),
                stream=sink is not None and self.queue.wants_deltas(j.id),
                job=JobRef(j.id, j.tenant, j.priority, j.attempts, j.metadata), files=self.files,
            )
            for j in jobs
        ]  # fmt: skip
        if self._watch is not None:
            self._watch.add(j.id for j in jobs)
        started = asyncio.get_running_loop().time()
        self.queue.observer.started(lane.cfg.name, jobs)
        runs = [
            _Run(j, f, started) for j, f in zip(jobs, lane.provider.start(requests), strict=True)
        ]
        lane.runs.update((r.job.id, r) for r in runs)
        return runs

    async def _settle(self, lane: _Lane, runs: list[_Run]) -> None:
        """Store each job's outcome as soon as it is known; a job still running past its own
        time limit is cancelled and failed with a timeout, the others go on."""
        timeout_s = lane.cfg.limits.timeout_s
        # The model's stack ends each call itself a little before timeout_s and keeps every
        # request's own outcome (a 429's Retry-After); this limit is the backstop for a
        # provider that ignores cancellation. Set at timeout_s exactly, it won the race on
        # a busy loop and turned a whole batch's answers into timeouts, retried at once.
        limit = timeout_s + max(0.25, 0.1 * timeout_s)
        loop = asyncio.get_running_loop()
        waiting = {r.future: r for r in runs}
        try:
            while waiting:
                left = min(r.started for r in waiting.values()) + limit - loop.time()
                done, _ = await asyncio.wait(
                    waiting, timeout=max(left, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    await self._settled(lane, [_outcome(lane, waiting[f]) for f in done])
                    for f in done:
                        waiting.pop(f)
                    continue
                late = [r for r in waiting.values() if loop.time() - r.started >= limit]
                err = ModelTimeout(
                    f"model {lane.cfg.name} did not answer within timeout_s={timeout_s}"
                )
                for r in late:
                    r.future.cancel()  # a continuous provider drops its sequence
                    waiting.pop(r.future)
                await self._settled(lane, [(r.job, err) for r in late])
        except asyncio.CancelledError:
            # Cut off by the drain timeout: the jobs stay in ``held`` for the drain to hand
            # back at once (the lease fence ignores any that got a result meanwhile).
            for f in waiting:
                f.cancel()
            raise
        finally:
            for r in runs:
                lane.runs.pop(r.job.id, None)
                lane.cancelled.discard(r.job.id)
                if self._watch is not None:
                    self._watch.discard(r.job.id)
            lane.freed.set()

    async def _settled(
        self, lane: _Lane, outcomes: Sequence[tuple[Job, Result | BaseException]]
    ) -> None:
        """Store outcomes that are known; a handed-back job goes back to the queue. If the
        backend fails here, the jobs are handed back (or their leases run out)."""
        now = asyncio.get_running_loop().time()
        self.queue.observer.settled(lane.cfg.name, outcomes, lane.runs, now)
        back = [j for j, o in outcomes if isinstance(o, _HandedBack)]
        done = [(j, o) for j, o in outcomes if isinstance(o, dict)]
        failed = [
            (j, o)
            for j, o in outcomes
            if isinstance(o, BaseException) and not isinstance(o, _HandedBack | _Cancelled)
        ]
        try:
            failed += await self._complete(done)
            await self.queue.fail(failed)
            if back:
                await self.queue.release(back)
        except Exception as exc:
            log.error("could not store %d outcomes of %s (%s)", len(outcomes), lane.cfg.name, exc)
            with contextlib.suppress(Exception):  # else their leases run out
                await self.queue.release([j for j, _ in outcomes], why=f"storing failed: {exc}")
        for job, _ in outcomes:
            self.held.pop(job.id, None)
            lane.preempted.discard(job.id)
        self._measure(lane, done)

    async def _complete(self, done: list[tuple[Job, dict[str, Any]]]) -> list[tuple[Job, Any]]:
        """Store results. If the store cannot encode one (a lone surrogate, an integer over
        64 bits), that one is stored repaired or, past repair, failed alone: the failures are
        returned; its batch-mates are stored as they are."""
        try:
            self.completed += len(await self.queue.complete(_results(done)))
            return []
        except Exception:
            good, bad = _storable(done)
            if not bad and all(g[1] is d[1] for g, d in zip(good, done, strict=True)):
                raise  # all were storable as they were: the backend failed
        self.completed += len(await self.queue.complete(_results(good)))
        return bad

    def _measure(self, lane: _Lane, done: list[tuple[Job, dict[str, Any]]]) -> None:
        now = asyncio.get_running_loop().time()
        for job, body in done:
            run = lane.runs.get(job.id)
            tokens = completion_tokens(body)
            if run is not None and tokens is not None:
                self.rates.observe(lane.cfg.name, tokens, now - run.started)

    def _token_sink(self, job: Job) -> TokenSink | None:
        if not job.body.get("messages"):
            return None
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        queue = self.queue

        def sink(text: str) -> None:
            # Most jobs have no listener anywhere: then a token costs one dict lookup. A model
            # that generates on another thread hands the event over to the loop's.
            if queue.wants_deltas(job.id):
                event = TokenDelta(job.id, text)
                if threading.get_ident() == loop_thread:
                    queue.publish(event)
                else:
                    loop.call_soon_threadsafe(queue.publish, event)

        return sink

    # -- cancels -----------------------------------------------------------------------------

    def _abort(self, job_id: str) -> None:
        """Stop the call of a running job that was cancelled (nothing is stored for it)."""
        for lane in self._lanes:
            run = lane.runs.get(job_id)
            if run is not None and not run.future.done():
                log.info("job %s was cancelled while it ran: stopping its call", job_id)
                lane.cancelled.add(job_id)
                run.future.cancel()

    async def _cancels(self) -> None:
        """Watch the events of the jobs running here (``_start`` adds them) for a cancel."""
        with self.queue.events.subscribe((), deltas=False) as self._watch:
            try:
                while True:
                    event = await self._watch.queue.get()
                    if isinstance(event, JobChanged) and event.status == JobStatus.CANCELLED:
                        self._abort(event.id)
            finally:
                self._watch = None

    async def _poll_cancels(self) -> None:
        """Where no events come from other processes: read the running jobs' states."""
        while True:
            await asyncio.sleep(self.cancel_poll_s)
            running = [job_id for lane in self._lanes for job_id in lane.runs]
            if not running:
                continue
            try:
                jobs = await self.queue.get_many(running)
            except Exception as exc:
                log.warning("could not read running jobs for cancels: %s", exc)
                continue
            for job in jobs:
                if job.status is JobStatus.CANCELLED:
                    self._abort(job.id)

    # -- upkeep ------------------------------------------------------------------------------

    async def _hand_back(self, jobs: Sequence[Job], why: str) -> None:
        """Release those of ``jobs`` still held (their attempt not counted); if the backend
        fails here too, they are dropped from ``held`` and their leases run out."""
        mine = [j for j in jobs if self.held.pop(j.id, None) is not None]
        if not mine:
            return
        try:
            await self.queue.release(mine, why=why)
        except Exception as exc:
            log.warning("could not hand back %d jobs (%s); their leases run out", len(mine), exc)

    def _live(self) -> list[Job]:
        """The held jobs with a call in flight; a held job found twice in a row without one
        (a path that lost it: a bug) is handed back."""
        running = {job_id for lane in self._lanes for job_id in lane.runs}
        idle = self.held.keys() - running
        lost = [self.held[i] for i in idle & self._idle]
        self._idle = idle - self._idle
        if lost:
            log.error("handing back %d held jobs with no call in flight", len(lost))
            self._launch(self._hand_back(lost, "held by its worker with no call in flight"))
        return [job for job_id, job in self.held.items() if job_id in running]

    def presence(self) -> WorkerSeen:
        """This worker as :mod:`genspool.core.presence` records it."""
        host, pid, _ = self.id.rsplit(":", 2)
        return WorkerSeen(
            self.id, host, int(pid), tuple(cfg.name for cfg in self.models), len(self.held),
            self._started_at, self.queue.clock(),
        )  # fmt: skip

    async def _heartbeat(self) -> None:
        ttl = self.queue.lease_s
        kv = self.queue.storage.kv
        with contextlib.suppress(Exception):  # the first heartbeat tries again
            await announce(kv, self.presence())
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await announce(kv, self.presence())
                await self.queue.heartbeat(self._live())
                for slots in self._slots:
                    await slots.renew()
            except Exception as exc:  # the backend is down: leases run out, others take over
                log.warning("heartbeat failed: %s", exc)

    async def _maintain(self) -> None:
        while True:
            try:
                await self.queue.maintain()
                await self.rates.publish()
            except Exception:
                log.exception("maintenance failed; trying again")
            await asyncio.sleep(self.maintain_s)


class _HandedBack(Exception):
    """The job's run was cancelled to make room for higher-priority work."""


class _Cancelled(Exception):
    """The job was cancelled (by its owner, or by its fan-out) while it ran here."""


def _outcome(lane: _Lane, run: _Run) -> tuple[Job, Result | BaseException]:
    future = run.future
    if future.cancelled():
        if run.job.id in lane.preempted:
            return run.job, _HandedBack()
        if run.job.id in lane.cancelled:
            return run.job, _Cancelled()
        return run.job, ModelError("the model call was cancelled", retryable=True)
    exc = future.exception()
    if exc is None:
        return run.job, future.result()
    if not isinstance(exc, ModelError):  # a provider bug must not kill the lane; the job retries
        log.error("model %s failed job %s", lane.cfg.name, run.job.id, exc_info=exc)
    return run.job, exc


def _results(done: Sequence[tuple[Job, dict[str, Any]]]) -> list[tuple[Job, dict[str, Any]]]:
    return [(j, {"status_code": 200, "body": r}) for j, r in done]


def _storable(
    done: Sequence[tuple[Job, dict[str, Any]]],
) -> tuple[list[tuple[Job, dict[str, Any]]], list[tuple[Job, Any]]]:
    """The results as every store can encode them (repaired where needed), and the jobs whose
    result is past repair, each with its error."""
    good: list[tuple[Job, dict[str, Any]]] = []
    bad: list[tuple[Job, Any]] = []
    for job, body in done:
        try:
            good.append((job, storable(body)))
        except Unstorable as exc:
            bad.append((job, UnstorableResult(f"model {job.model}: its answer {exc}")))
    return good, bad


def _unserved(job: Job, cfg: ModelConfig) -> ModelError:
    return ModelError(f"model {cfg.name} does not serve {job.url}", retryable=False)
