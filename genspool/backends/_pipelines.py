"""What the backends' PipelineStore roles share: the rows of a run and of its items as the SQL
backends write them, and a mixin that fills the role from a process's memory (the memory
backend)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genspool.backends._records import versioned_row
from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem, Tick, item_to_doc, run_to_doc
from genspool.core.roles import PipelineStore, RunFilter

__all__ = ["FINISHED", "MemoryPipelines", "PipelineState", "item_rows", "run_row", "tick_row"]

#: The statuses of an item that a later run of its pipeline skips (``items_finished``).
FINISHED = (ItemStatus.DONE.value, ItemStatus.SKIPPED.value)


def run_row(run: PipelineRun) -> dict[str, Any]:
    """The named parameters of ``run_put`` and ``run_update`` (and of ``run_of_key``, the
    first run of its key)."""
    return {**versioned_row(run, run_to_doc(run)), "pipeline": run.pipeline, "key": run.key}


def item_rows(items: Sequence[RunItem]) -> list[dict[str, Any]]:
    """The named parameters of ``items_put``, one dict per item; of two items of one
    ``(run_id, key)`` the later one (PostgreSQL's upsert may not write one row twice)."""
    last = {(i.run_id, i.key): i for i in items}.values()
    return [
        {"run_id": i.run_id, "key": i.key, "seq": i.seq, "status": i.status.value,
         "doc": item_to_doc(i)}
        for i in last
    ]  # fmt: skip


def tick_row(tick: Tick) -> dict[str, Any]:
    """The named parameters of ``tick_record``; a tick's columns, in its fields' order, are
    read back by ``Tick(*row)``."""
    return dataclasses.asdict(tick)


@dataclass
class PipelineState:
    """A memory backend's runs, items and ticks (shared by the backends of one name)."""

    runs: dict[str, PipelineRun] = field(default_factory=dict)
    by_key: dict[tuple[str, str, str], str] = field(default_factory=dict)  # -> run id
    items: dict[str, dict[str, RunItem]] = field(default_factory=dict)  # run id -> key ->
    ticks: dict[tuple[str, float], Tick] = field(default_factory=dict)

    def clear(self) -> None:
        for part in (self.runs, self.by_key, self.items, self.ticks):
            part.clear()


class MemoryPipelines(PipelineStore):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: records in the backend's
    shared state (``_pipelines``). Records are frozen: stored and handed out as they are."""

    _pipelines: PipelineState

    async def run_put(self, run: PipelineRun) -> PipelineRun:
        s = self._pipelines
        key = None if run.key is None else (run.tenant, run.pipeline, run.key)
        if key is not None and key in s.by_key:
            return s.runs[s.by_key[key]]
        s.runs[run.id] = run
        if key is not None:
            s.by_key[key] = run.id
        return run

    async def run_get(self, run_id: str, tenant: str | None) -> PipelineRun | None:
        found = self._pipelines.runs.get(run_id)
        return found if found is not None and tenant in (None, found.tenant) else None

    async def run_list(self, flt: RunFilter) -> list[PipelineRun]:
        found = [
            r
            for r in self._pipelines.runs.values()
            if flt.tenant in (None, r.tenant)
            and flt.pipeline in (None, r.pipeline)
            and (flt.after is None or r.id < flt.after)
        ]
        return sorted(found, key=lambda r: r.id, reverse=True)[: flt.limit]

    async def run_update(self, run: PipelineRun, version: int) -> bool:
        stored = self._pipelines.runs.get(run.id)
        if stored is None or stored.version != version:
            return False
        self._pipelines.runs[run.id] = run
        return True

    async def runs_active(self, limit: int) -> list[PipelineRun]:
        active = [r for r in self._pipelines.runs.values() if not r.terminal]
        return sorted(active, key=lambda r: r.id)[:limit]

    async def items_put(self, items: Sequence[RunItem]) -> None:
        s = self._pipelines
        for item in items:  # as the SQL backends: an item of no stored run is not kept
            if item.run_id in s.runs:
                s.items.setdefault(item.run_id, {})[item.key] = item

    async def items_list(
        self, run_id: str, after_seq: int, limit: int, status: ItemStatus | None = None
    ) -> list[RunItem]:
        found = [
            i
            for i in self._pipelines.items.get(run_id, {}).values()
            if i.seq > after_seq and status in (None, i.status)
        ]
        return sorted(found, key=lambda i: i.seq)[:limit]

    async def items_finished(
        self, tenant: str, pipeline: str, keys: Sequence[str]
    ) -> dict[str, RunItem]:
        s = self._pipelines
        runs = sorted(r.id for r in s.runs.values() if (r.tenant, r.pipeline) == (tenant, pipeline))
        return {
            key: item
            for run_id in runs  # oldest first: the latest run's item is kept
            for key in keys
            if (item := s.items.get(run_id, {}).get(key)) is not None and item.status in FINISHED
        }

    async def tick_record(self, tick: Tick) -> Tick:
        return self._pipelines.ticks.setdefault((tick.pipeline, tick.at), tick)

    async def ticks_list(self, pipeline: str, before: float | None, limit: int) -> list[Tick]:
        found = [
            t
            for t in self._pipelines.ticks.values()
            if t.pipeline == pipeline and (before is None or t.at < before)
        ]
        return sorted(found, key=lambda t: t.at, reverse=True)[:limit]
