"""The worker: leases batches per model, runs them as one model call, stores the outcomes.

One *lane* per served model. A lane holds at most ``max_concurrency`` batches in flight; each
batch is up to ``max_batch_size`` jobs, gathered for at most ``max_wait_ms`` after the first
one arrives (dynamic batching). A heartbeat keeps the leases of held jobs alive; a maintenance
loop expires overdue jobs and takes back the jobs of dead workers. ``stop()`` drains: no new
leases, in-flight batches get ``drain_timeout_s`` to finish, what is left is handed back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Sequence
from typing import Any

from genspool.config import ModelConfig
from genspool.core.events import TokenDelta
from genspool.core.job import Job
from genspool.core.models import Models, prompt_tokens
from genspool.core.queue import Queue
from genspool.core.slots import Slots
from genspool.exceptions import ModelError, ModelTimeout
from genspool.providers.base import Provider, Request, TokenSink

__all__ = ["Worker"]

log = logging.getLogger("genspool.worker")


class Worker:
    def __init__(
        self,
        queue: Queue,
        registry: Models,
        *,
        models: Sequence[str] | None = None,
        maintain_s: float = 1.0,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.registry = registry
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
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.slot_poll_s = 0.05

    def stop(self) -> None:
        """Begin draining; ``run()`` returns once in-flight work is finished or handed back."""
        self._stopping.set()

    async def start(self) -> None:
        """Build the providers and load their weights; raises if a model cannot be served."""
        if self.ready.is_set():
            return
        self._providers = {cfg.name: self.registry.provider(cfg.name) for cfg in self.models}
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
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            await self._drain(loops)

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
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
        """Lease and start batches of one model, each under one of the model's slots: at most
        ``max_concurrency`` batches run at once across every worker process."""
        local = asyncio.Semaphore(cfg.batching.max_concurrency)
        slots = Slots(
            self.queue.storage.coordination, cfg.name, cfg.batching.max_concurrency, owner=self.id,
            ttl_s=self.queue.lease_s,
        )  # fmt: skip
        self._slots.append(slots)
        while not self._stopping.is_set():
            await local.acquire()
            slot = None
            try:
                slot = await slots.take()
                jobs = await self._gather(cfg) if slot is not None else []
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
            task = asyncio.create_task(self._run_under(cfg, provider, jobs, slots, slot, local))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_under(
        self,
        cfg: ModelConfig,
        provider: Provider,
        jobs: list[Job],
        slots: Slots,
        slot: str,
        local: asyncio.Semaphore,
    ) -> None:
        try:
            await self._run_batch(cfg, provider, jobs)
        finally:
            local.release()
            await self._quietly(slots.put(slot, worked=True))

    @staticmethod
    async def _quietly(step: Awaitable[None]) -> None:
        """Give back a slot; if the backend is down, its time runs out by itself."""
        try:
            await step
        except Exception as exc:
            log.warning("could not give back a slot: %s", exc)

    async def _gather(self, cfg: ModelConfig) -> list[Job]:
        """Lease a batch: wait for a first job, then up to ``max_wait_ms`` to fill it."""
        size = cfg.batching.max_batch_size
        jobs = await self._lease(cfg, size)
        if not jobs:
            await self.queue.storage.signals.wait_for_work(cfg.name, 1.0)
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.batching.max_wait_ms / 1000
        while len(jobs) < size and (left := deadline - loop.time()) > 0:
            await self.queue.storage.signals.wait_for_work(cfg.name, left)
            jobs += await self._lease(cfg, size - len(jobs))
        return jobs

    async def _lease(self, cfg: ModelConfig, limit: int) -> list[Job]:
        if self._stopping.is_set():
            return []
        jobs = await self.queue.lease(cfg.name, limit)
        self.held.update((j.id, j) for j in jobs)
        return jobs

    # -- running -----------------------------------------------------------------------------

    async def _run_batch(self, cfg: ModelConfig, provider: Provider, jobs: list[Job]) -> None:
        cut_off = False
        try:
            served = [j for j in jobs if j.url in provider.endpoints]
            wrong = [j for j in jobs if j.url not in provider.endpoints]
            await self.queue.fail([(j, _unserved(j, cfg)) for j in wrong])
            for url in sorted({j.url for j in served}):
                await self._call(cfg, provider, [j for j in served if j.url == url])
        except asyncio.CancelledError:
            # Cut off by the drain timeout: the jobs stay in ``held`` for the drain to hand
            # back at once (the lease fence ignores any that got a result meanwhile).
            cut_off = True
            raise
        finally:
            if not cut_off:
                for job in jobs:
                    self.held.pop(job.id, None)

    async def _call(self, cfg: ModelConfig, provider: Provider, jobs: list[Job]) -> None:
        requests = [
            Request(j.url, j.body, self._token_sink(j), prompt_tokens(j.metadata)) for j in jobs
        ]
        timeout_s = cfg.limits.timeout_s
        try:
            # The model's stack ends each call itself a little before timeout_s and keeps every
            # request's own outcome (a 429's Retry-After); this limit is the backstop for a
            # provider that ignores cancellation. Set at timeout_s exactly, it won the race on
            # a busy loop and turned a whole batch's answers into timeouts, retried at once.
            async with asyncio.timeout(timeout_s + max(0.25, 0.1 * timeout_s)):
                results = await provider.handle(requests)
        except TimeoutError:
            err = ModelTimeout(f"model {cfg.name} did not answer within timeout_s={timeout_s}")
            await self.queue.fail([(j, err) for j in jobs])
            return
        except Exception as exc:  # a provider bug must not kill the lane; the jobs retry
            log.exception("model %s failed a batch of %d", cfg.name, len(jobs))
            await self.queue.fail([(j, exc) for j in jobs])
            return
        await self._store(jobs, results)

    async def _store(self, jobs: list[Job], results: Sequence[dict[str, Any] | ModelError]) -> None:
        done = [
            (j, {"status_code": 200, "body": r})
            for j, r in zip(jobs, results, strict=True)
            if not isinstance(r, ModelError)
        ]
        failed = [(j, r) for j, r in zip(jobs, results, strict=True) if isinstance(r, ModelError)]
        stored = await self.queue.complete(done)
        self.completed += len(stored)
        await self.queue.fail(failed)

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

    # -- upkeep ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        ttl = self.queue.lease_s
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await self.queue.heartbeat(list(self.held.values()))
                for slots in self._slots:
                    await slots.renew()
            except Exception as exc:  # the backend is down: leases run out, others take over
                log.warning("heartbeat failed: %s", exc)

    async def _maintain(self) -> None:
        while True:
            try:
                await self.queue.maintain()
            except Exception:
                log.exception("maintenance failed; trying again")
            await asyncio.sleep(self.maintain_s)


def _unserved(job: Job, cfg: ModelConfig) -> ModelError:
    return ModelError(f"model {cfg.name} does not serve {job.url}", retryable=False)
