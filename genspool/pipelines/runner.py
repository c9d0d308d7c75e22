"""The pipeline runner: drives runs from ``queued`` to their end, in any API process.

As the batch runner does (:mod:`genspool.batches.runner`, whose reasons hold here too), each
API process runs one; a run's record lease makes one of them drive each run, and when that
process dies another takes the run over. Driving a run:

0. resolve the stored prompts its steps name and pin their versions on the run
   (:mod:`genspool.pipelines.prompts`): a prompt it cannot use fails the run before any item;
1. read the source a chunk at a time, give each record its key (the pipeline's ``key``
   template, or a hash of the record), mark the keys an earlier run finished ``skipped`` (unless
   the run is forced), store the chunk's items, then move the ``read`` cursor: a runner that dies
   between the two stores the same items again, harmlessly;
2. take up to ``concurrency`` items at once through their steps (:mod:`genspool.pipelines.steps`)
   and store each as it ends; a resumed run first takes the items it had stored still pending,
   and their model calls are the jobs that already exist, so no item is called twice;
3. once every item read has ended (or the run is cancelled: the items in flight are stopped,
   their jobs cancelled), count the items exactly, write the sinks in source order and the error
   file, and end the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem
from genspool.core.prompts import Prompts, PromptVersion
from genspool.core.queue import Queue
from genspool.core.roles import PipelineStore
from genspool.core.scanner import Scanner
from genspool.exceptions import Conflict, NotFound
from genspool.fanout.template import TemplateError, render
from genspool.files import Files
from genspool.pipelines import machine
from genspool.pipelines.prompts import PromptProblem, pin_prompts
from genspool.pipelines.sinks import open_sink
from genspool.pipelines.sources import Source, read_items
from genspool.pipelines.spec import Pipeline
from genspool.pipelines.steps import ItemOutcome, ItemWork, RequestCheck

__all__ = ["PipelineRunner", "item_key"]

log = logging.getLogger("genspool.pipelines")

_SOURCE: TypeAdapter[Source] = TypeAdapter(Source)


class _Lost(Exception):
    """Another runner holds the run now (this one's lease ran out), or it ended."""


class PipelineRunner(Scanner):
    WHAT = "pipeline runs"
    LEASE_S = 30.0
    #: How often a driven run's record is written with the counts so far (and a cancel seen).
    TICK_S = 0.25
    READ_CHUNK = 500

    def __init__(
        self,
        store: PipelineStore,
        queue: Queue,
        files: Files | None,
        pipelines: dict[str, Pipeline],
        check: RequestCheck,
        *,
        owner: str | None = None,
        prompts: Prompts | None = None,
    ) -> None:
        """``prompts``: the registry the steps' stored prompts come from (None: none kept)."""
        super().__init__(log)
        self.store, self.queue, self.files, self.check = store, queue, files, check
        self.prompts = prompts
        self.pipelines = pipelines
        self.owner = owner or f"pipelines-{uuid.uuid4().hex[:12]}"
        self.clock: Callable[[], float] = queue.clock
        #: Called with each run this runner ended, after the write (webhooks, events).
        self.on_end: list[Callable[[PipelineRun], Awaitable[None]]] = []

    async def scan(self) -> None:
        for found in await self.store.runs_active(100):
            if self.driving(found.id) or self.full:
                continue
            claimed = machine.claim(found, self.owner, self.clock(), self.LEASE_S)
            if claimed is not None and await self.store.run_update(claimed, found.version):
                self.drive(found.id, self._drive(claimed))

    # -- the record --------------------------------------------------------------------------

    async def _apply(self, old: PipelineRun, new: PipelineRun | None) -> PipelineRun:
        """``new`` written over ``old``, or the record as it is now (a cancel came between)."""
        if new is None:
            return old
        if await self.store.run_update(new, old.version):
            if new.terminal and not old.terminal:
                for hook in self.on_end:
                    try:
                        await hook(new)
                    except Exception:
                        log.exception("run %s: a hook on its end failed", new.id)
            return new
        fresh = await self.store.run_get(old.id, None)
        if fresh is None or fresh.terminal or fresh.owner != self.owner:
            raise _Lost(old.id)
        return fresh

    async def _drive(self, r: PipelineRun) -> None:
        try:
            pipeline = self.pipelines.get(r.pipeline)
            if pipeline is None:
                why = f"no pipeline {r.pipeline!r} is configured in this process's models file"
                await self._apply(r, machine.fail(r, "unknown_pipeline", why, self.clock()))
                return
            if r.stop is not None and r.started_at is None:
                r = await self._finalize(r, pipeline)
                return
            r = await self._apply(r, machine.start(r, self.clock(), self.LEASE_S))
            r, versions = await self._pin(r, pipeline)
            if r.terminal:
                return
            r = await _Drive(self, pipeline, r, versions).run()
            if not r.terminal:
                await self._finalize(r, pipeline)
        except _Lost:
            log.info("run %s: driven elsewhere now", r.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: driving it failed; it is tried again", r.id)

    async def _pin(
        self, r: PipelineRun, pipeline: Pipeline
    ) -> tuple[PipelineRun, dict[str, PromptVersion]]:
        """The steps' stored prompts, resolved in the run's tenant and pinned on the run (a run
        that cannot use one fails at once, saying which step and why)."""
        try:
            versions, pins = await pin_prompts(self.prompts, pipeline.stored_prompts(), r)
        except PromptProblem as exc:
            failed = machine.fail(r, "invalid_prompt", str(exc), self.clock())
            return await self._apply(r, failed), {}
        if pins != r.prompts:
            r = await self._apply(r, machine.pinned(r, pins, self.clock(), self.LEASE_S))
        return r, versions

    # -- the end -----------------------------------------------------------------------------

    async def _finalize(self, r: PipelineRun, pipeline: Pipeline) -> PipelineRun:
        counts = {"succeeded": 0, "failed": 0, "skipped": 0}
        async for item in self._items(r.id, None):
            if item.status is ItemStatus.DONE:
                counts["succeeded"] += 1
            elif item.status is ItemStatus.FAILED:
                counts["failed"] += 1
            elif item.status is ItemStatus.SKIPPED:
                counts["skipped"] += 1
        r = await self._apply(r, machine.finalizing(r, counts, r.usage, self.clock(), self.LEASE_S))
        try:
            outputs = tuple([await self._sink(r, pipeline, i) for i in range(len(pipeline.sink))])
            error_file = await self._error_file(r) if counts["failed"] else None
        except Exception as exc:
            log.exception("run %s: writing its sinks failed", r.id)
            return await self._apply(
                r, machine.fail(r, "sink_failed", f"{type(exc).__name__}: {exc}", self.clock())
            )
        ids = tuple(o for o in outputs if o is not None)
        return await self._apply(r, machine.finished(r, ids, error_file, self.clock()))

    async def _items(self, run_id: str, status: ItemStatus | None) -> AsyncIterator[RunItem]:
        after = 0
        while True:
            page = await self.store.items_list(run_id, after, 1000, status)
            for item in page:
                yield item
            if len(page) < 1000:
                return
            after = page[-1].seq

    async def _sink(self, r: PipelineRun, pipeline: Pipeline, index: int) -> str | None:
        info = {"id": r.id, "pipeline": r.pipeline, "inputs": r.inputs, "created_at": r.created_at}
        writer = open_sink(pipeline.sink[index], base=pipeline.base, run=info)
        chunk: list[dict[str, Any]] = []
        async for item in self._items(r.id, None):
            if item.status is not ItemStatus.DONE and _origin(item) != ItemStatus.DONE.value:
                continue  # failed, filtered out, pending (a cancelled run)
            chunk.append(_sink_item(item))
            if len(chunk) >= 500:
                await writer.write(chunk)
                chunk = []
        if chunk:
            await writer.write(chunk)
        out = await writer.close()
        if out.data is None or self.files is None:
            return None
        return await self._store_file(r, out.data, f"{r.id}_{index}_{out.filename}")

    async def _error_file(self, r: PipelineRun) -> str | None:
        lines = bytearray()
        async for item in self._items(r.id, ItemStatus.FAILED):
            lines += orjson.dumps(
                {"key": item.key, "seq": item.seq, "item": item.data, "error": item.error}
            )
            lines += b"\n"
        if self.files is None:
            return None
        return await self._store_file(r, bytes(lines), f"{r.id}_errors.jsonl")

    async def _store_file(self, r: PipelineRun, data: bytes, name: str) -> str:
        assert self.files is not None
        async with await self.files.open(tenant=r.tenant) as writer:
            await writer.write(data)
            record = await writer.commit(filename=name, purpose="pipeline_output")
        return record.id


def _sink_item(item: RunItem) -> dict[str, Any]:
    """An item as a sink sees it: one an earlier run finished is ``done`` with the outputs
    that run gave, and names that run (``earlier_run``)."""
    out = {
        "key": item.key, "seq": item.seq, "status": item.status.value, "item": item.data,
        "steps": item.steps, "error": item.error,
    }  # fmt: skip
    if item.status is ItemStatus.SKIPPED and item.error is not None:
        out.update(status=ItemStatus.DONE.value, error=None, earlier_run=item.error["run_id"])
    return out


def _origin(item: RunItem) -> str | None:
    """What an item skipped as finished earlier was in the run that finished it."""
    error = item.error or {}
    return error.get("status") if error.get("code") == "finished_earlier" else None


def _reused(item: RunItem, earlier: RunItem) -> RunItem:
    """``item`` skipped: ``earlier`` (of an earlier run) finished its key. It keeps that run's
    outputs, so this run's sinks hold every item the pipeline finished, not only the new."""
    origin = _origin(earlier)
    run_id = (earlier.error or {}).get("run_id") if origin else earlier.run_id
    error = {
        "code": "finished_earlier", "run_id": run_id, "status": origin or earlier.status.value,
        "message": f"run {run_id} of the pipeline finished this key",
    }  # fmt: skip
    return dataclasses.replace(item, status=ItemStatus.SKIPPED, steps=earlier.steps, error=error)


def item_key(pipeline: Pipeline, record: dict[str, Any], ctx: dict[str, Any]) -> str:
    """The pipeline's ``key`` template filled, or a hash of the record (equal records, one
    key: a re-run skips what did not change)."""
    if pipeline.key is not None:
        return str(render(pipeline.key, ctx))
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class _Drive:
    """One runner's drive of one run: the source read, the items in flight, the counts."""

    def __init__(
        self,
        runner: PipelineRunner,
        pipeline: Pipeline,
        r: PipelineRun,
        prompts: dict[str, PromptVersion],
    ) -> None:
        self.runner, self.pipeline, self.r = runner, pipeline, r
        self.work = ItemWork(pipeline, r, runner.queue, runner.files, runner.check, prompts)
        self.waiting: list[RunItem] = []
        self.flying: dict[asyncio.Task[ItemOutcome], RunItem] = {}
        self.keys: set[str] = set()
        self.ended: list[ItemOutcome] = []
        self.source: AsyncIterator[dict[str, Any]] | None = None

    async def run(self) -> PipelineRun:
        runner = self.runner
        try:
            await self._resume()
            while True:
                if self.r.stop is not None:
                    await self._stop()
                    return self.r
                reading = not self.r.source_done and len(self.waiting) < self.pipeline.concurrency
                if reading and not await self._read():
                    return self.r  # the run failed
                while self.waiting and len(self.flying) < self.pipeline.concurrency:
                    item = self.waiting.pop(0)
                    task = asyncio.create_task(self.work.process(item))
                    self.flying[task] = item
                if not self.flying and not self.waiting and self.r.source_done:
                    await self._flush()
                    return self.r
                if self.flying:
                    done, _ = await asyncio.wait(
                        self.flying, timeout=runner.TICK_S, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        self.flying.pop(task)
                        self.ended.append(task.result())
                await self._flush()
        finally:
            for task in self.flying:
                task.cancel()
            await asyncio.gather(*self.flying, return_exceptions=True)
            if self.source is not None:
                with contextlib.suppress(Exception):
                    await self.source.aclose()  # type: ignore[attr-defined]

    async def _resume(self) -> None:
        """The items a runner before this one stored: their keys, and those still to do."""
        async for item in self.runner._items(self.r.id, None):
            self.keys.add(item.key)
            if item.status is ItemStatus.PENDING:
                self.waiting.append(item)

    async def _read(self) -> bool:
        """The next chunk of the source stored as items; False when the run failed."""
        runner, r = self.runner, self.r
        chunk: list[RunItem] = []
        exhausted = False
        try:
            if self.source is None:
                self.source = read_items(
                    self._source(), base=self.pipeline.base,
                    open_file=self._open_file if runner.files is not None else None,
                    skip=r.read,
                )  # fmt: skip
            while len(chunk) < runner.READ_CHUNK:
                try:
                    record = await anext(self.source)
                except StopAsyncIteration:
                    exhausted = True
                    break
                chunk.append(self._item(r.read + len(chunk) + 1, record))
        except (ValueError, OSError, NotFound, ValidationError) as exc:
            why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
            self.r = await runner._apply(r, machine.fail(r, "source_failed", why, runner.clock()))
            return False
        if chunk and not r.force:
            finished = await runner.store.items_finished(
                r.tenant, r.pipeline, [i.key for i in chunk]
            )
            for n, item in enumerate(chunk):
                earlier = finished.get(item.key)
                if earlier is not None and item.status is ItemStatus.PENDING:
                    chunk[n] = _reused(item, earlier)
        if chunk:
            await runner.store.items_put(chunk)
        self.waiting.extend(i for i in chunk if i.status is ItemStatus.PENDING)
        skipped = sum(1 for i in chunk if i.status is ItemStatus.SKIPPED)
        failed = sum(1 for i in chunk if i.status is ItemStatus.FAILED)
        new = machine.read(r, len(chunk), exhausted=exhausted, now=runner.clock(),
                           lease_s=runner.LEASE_S)  # fmt: skip
        if skipped or failed:
            new = machine.counted(new, skipped=skipped, failed=failed, now=runner.clock(),
                                  lease_s=runner.LEASE_S)  # fmt: skip
        self.r = await runner._apply(r, new)
        return True

    def _source(self) -> Source:
        """The source with the run's inputs filled in (``{jsonl: "{{inputs.file}}"}``)."""
        values = {"inputs": self.r.inputs, "run": {"id": self.r.id, "pipeline": self.r.pipeline}}
        raw = render(self.pipeline.source.model_dump(mode="json", exclude_none=True), values)
        return _SOURCE.validate_python(raw)

    def _item(self, seq: int, record: Any) -> RunItem:
        data = record if isinstance(record, dict) else {"value": record}
        ctx = {"item": data, "seq": seq, "inputs": self.r.inputs,
               "run": {"id": self.r.id, "pipeline": self.r.pipeline}}  # fmt: skip
        try:
            key = item_key(self.pipeline, data, ctx)
        except TemplateError as exc:
            error = {"step": "key", "code": "template", "message": str(exc)}
            return RunItem(self.r.id, f"#{seq}", seq, ItemStatus.FAILED, data, error=error)
        if key in self.keys:
            return RunItem(self.r.id, f"{key}#{seq}", seq, ItemStatus.FAILED, data, error={
                "step": "key", "code": "duplicate_key",
                "message": f"the key {key!r} was given to an earlier item of this run",
            })  # fmt: skip
        self.keys.add(key)
        return RunItem(self.r.id, key, seq, ItemStatus.PENDING, data)

    async def _open_file(self, file_id: str) -> AsyncIterator[bytes]:
        assert self.runner.files is not None
        _, chunks = await self.runner.files.content(file_id, self.r.tenant)
        return chunks

    async def _flush(self) -> None:
        """The items that ended stored, the counts written, the lease kept, a cancel seen."""
        runner, r = self.runner, self.r
        if self.ended:
            ended, self.ended = self.ended, []
            await runner.store.items_put([o.item for o in ended])
            usage: dict[str, int] = {}
            for o in ended:
                for k, v in o.usage.items():
                    usage[k] = usage.get(k, 0) + v
            status = [o.item.status for o in ended]
            self.r = await runner._apply(r, machine.counted(
                r, succeeded=status.count(ItemStatus.DONE), failed=status.count(ItemStatus.FAILED),
                skipped=status.count(ItemStatus.SKIPPED), usage=usage, now=runner.clock(),
                lease_s=runner.LEASE_S,
            ))  # fmt: skip
        elif r.lease_until - runner.clock() < runner.LEASE_S / 2:
            self.r = await runner._apply(r, machine.renew(r, runner.clock(), runner.LEASE_S))
        else:
            fresh = await runner.store.run_get(r.id, None)  # a cancel from another process
            if fresh is None or fresh.owner != runner.owner or fresh.terminal:
                raise _Lost(r.id)
            self.r = fresh

    async def _stop(self) -> None:
        """Cancelled: the items in flight stopped and their jobs cancelled; those that ended
        meanwhile kept."""
        for task in self.flying:
            task.cancel()
        await asyncio.gather(*self.flying, return_exceptions=True)
        ids = [j for item in self.flying.values() for j in self.work.job_ids(item)]
        self.flying.clear()
        for job_id in ids:
            with contextlib.suppress(Conflict, NotFound):
                await self.runner.queue.cancel(job_id)
        await self._flush()
