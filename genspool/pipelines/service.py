"""Pipelines: what the API does with them (start a run, read, list, cancel, read items and
ticks) over a :class:`~genspool.core.roles.PipelineStore`, and the runner and the triggers
each API process runs beside it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genspool.core.batch import Batch
from genspool.core.job import Job
from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem, Tick
from genspool.core.prompts import Prompts
from genspool.core.queue import Queue
from genspool.core.roles import PipelineStore, RunFilter
from genspool.exceptions import Conflict, InvalidRequest, NotFound
from genspool.files import Files
from genspool.pipelines import machine
from genspool.pipelines.runner import PipelineRunner
from genspool.pipelines.spec import Pipeline
from genspool.pipelines.steps import RequestCheck
from genspool.pipelines.triggers import Triggers, start_run
from genspool.webhooks.events import WebhookEvent, batch_event, job_event

__all__ = ["MAX_LIST_LIMIT", "Pipelines", "RunPage", "public_item", "public_run"]

log = logging.getLogger("genspool.pipelines")

MAX_LIST_LIMIT = 100


@dataclass(frozen=True, slots=True)
class RunPage:
    data: list[PipelineRun]
    has_more: bool


class Pipelines:
    CANCEL_TRIES = 20

    def __init__(
        self,
        store: PipelineStore,
        queue: Queue,
        files: Files | None,
        pipelines: dict[str, Pipeline],
        check: RequestCheck,
        prompts: Prompts | None = None,
    ) -> None:
        """``prompts``: the registry the steps' stored prompts come from."""
        self.store, self.queue, self.pipelines = store, queue, pipelines
        self.runner = PipelineRunner(store, queue, files, pipelines, check, prompts=prompts)
        self.triggers = Triggers(store, pipelines, queue.clock, on_run=lambda _: self.runner.poke())
        if self.triggers.listens:
            queue.on_ended.append(self.jobs_ended)

    async def run(self) -> None:
        """The runner and the triggers, until cancelled."""
        await asyncio.gather(self.runner.run(), self.triggers.run())

    def pipeline(self, name: str) -> Pipeline:
        found = self.pipelines.get(name)
        if found is None:
            known = ", ".join(sorted(self.pipelines)) or "none is configured"
            raise NotFound(f"no pipeline {name!r} ({known})", param="name")
        return found

    async def start(
        self,
        name: str,
        *,
        tenant: str,
        inputs: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        force: bool = False,
        scopes: tuple[str, ...] | None = None,
    ) -> tuple[PipelineRun, bool]:
        """The run, and whether it is new (not one stored under the same key before)."""
        pipeline = self.pipeline(name)
        if not pipeline.on.http:
            raise Conflict(f"pipeline {name!r} is not started by HTTP (its on.http is false)")
        now = self.queue.clock()
        try:
            run = await start_run(
                self.store, pipeline, now=now, trigger="http",
                inputs=inputs, key=None if idempotency_key is None else f"http:{idempotency_key}",
                tenant=tenant, scopes=scopes, metadata=metadata, force=force,
            )  # fmt: skip
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="inputs") from exc
        self.runner.poke()
        return run, run.created_at == now and run.trigger == "http" and run.version == 0

    async def get(self, run_id: str, tenant: str | None, name: str | None = None) -> PipelineRun:
        found = await self.store.run_get(run_id, tenant)
        if found is None or (name is not None and found.pipeline != name):
            raise NotFound(f"no pipeline run {run_id!r}", param="run_id")
        return found

    async def page(
        self, tenant: str | None, pipeline: str | None, *, after: str | None, limit: int
    ) -> RunPage:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit: must be 1 to {MAX_LIST_LIMIT}", param="limit")
        found = await self.store.run_list(RunFilter(tenant, pipeline, after, limit + 1))
        return RunPage(found[:limit], len(found) > limit)

    async def cancel(self, run_id: str, tenant: str | None, name: str | None = None) -> PipelineRun:
        for _ in range(self.CANCEL_TRIES):
            run = await self.get(run_id, tenant, name)
            if run.status.value in ("cancelling", "cancelled"):
                return run
            new = machine.cancel(run, self.queue.clock())
            if new is None:
                raise Conflict(
                    f"run {run_id} is {run.status.value}; only a queued or running run can be"
                    " cancelled"
                )
            if await self.store.run_update(new, run.version):
                self.runner.poke()
                return new
        return await self.get(run_id, tenant, name)

    async def items(
        self, run: PipelineRun, *, after: int, limit: int, status: str | None
    ) -> list[RunItem]:
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit: must be 1 to 1000", param="limit")
        try:
            wanted = None if status is None else ItemStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in ItemStatus)
            raise InvalidRequest(f"status: one of {known}", param="status") from None
        return await self.store.items_list(run.id, after, limit, wanted)

    async def ticks(self, name: str, *, before: float | None, limit: int) -> list[Tick]:
        self.pipeline(name)
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit: must be 1 to 1000", param="limit")
        return await self.store.ticks_list(name, before, limit)

    # -- events that start runs ---------------------------------------------------------------

    async def jobs_ended(self, jobs: Sequence[Job]) -> None:
        """The hook on the queue: runs started by jobs that ended (not the runs' own)."""
        for job in jobs:
            if "pipeline_run" in job.metadata:
                continue
            await self._event(job_event(job))

    async def batch_ended(self, batch: Batch) -> None:
        """The hook on the batch runner."""
        await self._event(batch_event(batch))

    async def _event(self, event: WebhookEvent) -> None:
        try:
            await self.triggers.event(
                {"type": event.type, "id": event.id, "tenant": event.tenant, "detail": event.data}
            )
        except Exception:
            log.exception("starting the runs of event %s failed", event.id)


def public_run(run: PipelineRun, now: float) -> dict[str, Any]:
    """A run as the API shows it: counts, and the rate of items ending (per second)."""
    ended = run.succeeded + run.failed + run.skipped
    start = run.started_at
    stop = run.ended_at or now
    rate = ended / (stop - start) if start is not None and stop > start else 0.0
    return {
        "id": run.id, "object": "pipeline.run", "pipeline": run.pipeline,
        "status": run.status.value, "trigger": run.trigger, "inputs": run.inputs,
        "metadata": run.metadata, "created_at": int(run.created_at),
        "started_at": _int(run.started_at), "finalizing_at": _int(run.finalizing_at),
        "cancelling_at": _int(run.cancelling_at), "ended_at": _int(run.ended_at),
        "counts": {
            "total": run.total, "read": run.read, "succeeded": run.succeeded,
            "failed": run.failed, "skipped": run.skipped,
            "pending": max(0, run.read - ended) if not run.terminal else 0,
        },
        "rate": round(rate, 3), "usage": run.usage, "output_file_ids": list(run.output_file_ids),
        "error_file_id": run.error_file_id, "error": run.error, "prompts": run.prompts,
    }  # fmt: skip


def public_item(item: RunItem) -> dict[str, Any]:
    return {
        "object": "pipeline.run.item", "key": item.key, "seq": item.seq,
        "status": item.status.value, "item": item.data, "steps": item.steps, "error": item.error,
    }  # fmt: skip


def _int(t: float | None) -> int | None:
    return None if t is None else int(t)
