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
from collections.abc import Sequence
from typing import Any

from genspool.config import ModelConfig
from genspool.core.job import Job, now
from genspool.core.queue import Queue
from genspool.exceptions import ModelError, ModelTimeout
from genspool.providers.base import Provider, Request, TokenSink
from genspool.providers.registry import ModelRegistry

__all__ = ["Worker"]

log = logging.getLogger("genspool.worker")


class Worker:
    def __init__(
        self,
        queue: Queue,
        registry: ModelRegistry,
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
        self._slots: dict[str, tuple[str, int]] = {}  # held slot -> (name, limit)
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
        for slot in list(self._slots):
            await self._release_slot(slot)

    # -- leasing -----------------------------------------------------------------------------

    async def _lane(self, cfg: ModelConfig, provider: Provider) -> None:
        """Lease and start batches of one model. ``max_concurrency`` holds across every worker
        process: a batch runs only under one of the model's slots, which the backend shares.
        A lane keeps its slot while it finds work and gives it back when it finds none."""
        free: asyncio.Queue[str] = asyncio.Queue()
        for i in range(cfg.max_concurrency):
            free.put_nowait(f"{self.id}/{cfg.name}/{i}")
        while not self._stopping.is_set():
            slot = await free.get()
            try:
                jobs = await self._gather_under_slot(cfg, slot)
            except Exception as exc:
                free.put_nowait(slot)
                log.error("leasing for %s failed (%s); retrying in 1 s", cfg.name, exc)
                await asyncio.sleep(1.0)
                continue
            if not jobs:
                free.put_nowait(slot)
                continue
            task = asyncio.create_task(self._run_batch(cfg, provider, jobs))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            task.add_done_callback(lambda _, slot=slot: free.put_nowait(slot))  # type: ignore[misc]

    async def _gather_under_slot(self, cfg: ModelConfig, slot: str) -> list[Job]:
        if slot not in self._slots:
            name = f"model:{cfg.name}"
            ok = await self.queue.backend.acquire_slot(
                name, slot, cfg.max_concurrency, self.queue.lease_s, now()
            )
            if not ok:
                await asyncio.sleep(self.slot_poll_s)  # all slots are busy in other processes
                return []
            self._slots[slot] = (name, cfg.max_concurrency)
        jobs: list[Job] = []
        try:
            jobs = await self._gather(cfg)
        finally:
            if not jobs:
                await self._release_slot(slot)
        return jobs

    async def _release_slot(self, slot: str) -> None:
        held = self._slots.pop(slot, None)
        if held is not None:
            await self.queue.backend.release_slot(held[0], slot)

    async def _gather(self, cfg: ModelConfig) -> list[Job]:
        """Lease a batch: wait for a first job, then up to ``max_wait_ms`` to fill it."""
        jobs = await self._lease(cfg, cfg.max_batch_size)
        if not jobs:
            await self.queue.backend.wait_for_work(cfg.name, 1.0)
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.max_wait_ms / 1000
        while len(jobs) < cfg.max_batch_size and (left := deadline - loop.time()) > 0:
            await self.queue.backend.wait_for_work(cfg.name, left)
            jobs += await self._lease(cfg, cfg.max_batch_size - len(jobs))
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
        requests = [Request(j.url, j.body, self._token_sink(j)) for j in jobs]
        try:
            async with asyncio.timeout(cfg.timeout_s):
                results = await provider.handle(requests)
        except TimeoutError:
            err = ModelTimeout(f"model {cfg.name} did not answer within timeout_s={cfg.timeout_s}")
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
        queue = self.queue

        def sink(text: str) -> None:
            # Most jobs have no listener in this process: skip the cross-thread hop, unless
            # events also go to other processes, whose listeners we cannot see.
            if queue.broadcasts or queue.events.wants(job.id):
                loop.call_soon_threadsafe(
                    queue.publish, {"id": job.id, "status": "running", "delta": text}
                )

        return sink

    # -- upkeep ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        backend, ttl = self.queue.backend, self.queue.lease_s
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await self.queue.heartbeat(list(self.held.values()))
                for slot, (name, limit) in list(self._slots.items()):
                    await backend.acquire_slot(name, slot, limit, ttl, now())
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
