"""The PipelineStore role of the PostgreSQL backend: runs, their items and the ticks of
schedules in the ``runs``, ``run_items`` and ``ticks`` tables (migration 9), each call one
statement on a pooled connection (``run_put`` and ``tick_record`` two when another process
stored the record first)."""

from __future__ import annotations

from collections.abc import Sequence

from genspool.backends._errors import translated
from genspool.backends._pipelines import FINISHED, item_rows, run_row, tick_row
from genspool.backends._records import page_query
from genspool.backends._sql import load_queries
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.pipeline import (
    ItemStatus,
    PipelineRun,
    RunItem,
    Tick,
    item_from_doc,
    run_from_doc,
)
from genspool.core.roles import PipelineStore, RunFilter

__all__ = ["PostgresPipelines"]

Q = encoded(load_queries("postgres", source="pipelines.sql"))
_ITEM_COLUMNS = ("run_id", "key", "seq", "status", "doc")


class PostgresPipelines(PostgresRecords, PipelineStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("run_put", ERRORS)
    async def run_put(self, run: PipelineRun) -> PipelineRun:
        first = await self._first(Q["run_put"], Q["run_of_key"], run_row(run))
        return run if first is None else run_from_doc(first[0])

    @translated("run_get", ERRORS)
    async def run_get(self, run_id: str, tenant: str | None) -> PipelineRun | None:
        return await self._doc(Q["run_get"], {"id": run_id, "tenant": tenant}, run_from_doc)

    @translated("run_list", ERRORS)
    async def run_list(self, flt: RunFilter) -> list[PipelineRun]:
        query, args = page_query(
            "runs", "doc", {"tenant": flt.tenant, "pipeline": flt.pipeline}, after=flt.after,
            limit=flt.limit, mark="%({})s",
        )  # fmt: skip
        return await self._docs(query.encode(), args, run_from_doc)

    @translated("run_update", ERRORS)
    async def run_update(self, run: PipelineRun, version: int) -> bool:
        return await self._swap(Q["run_update"], run_row(run), version)

    @translated("runs_active", ERRORS)
    async def runs_active(self, limit: int) -> list[PipelineRun]:
        return await self._docs(Q["runs_active"], {"limit": limit}, run_from_doc)

    @translated("items_put", ERRORS)
    async def items_put(self, items: Sequence[RunItem]) -> None:
        rows = item_rows(items)
        if rows:
            await self._written(Q["items_put"], {c: [r[c] for r in rows] for c in _ITEM_COLUMNS})

    @translated("items_list", ERRORS)
    async def items_list(
        self, run_id: str, after_seq: int, limit: int, status: ItemStatus | None = None
    ) -> list[RunItem]:
        args = {"run_id": run_id, "after_seq": after_seq, "limit": limit,
                "status": None if status is None else status.value}  # fmt: skip
        rows = await self._rows(Q["items_list"], args)
        return [item_from_doc(run_id, key, seq, doc) for key, seq, doc in rows]

    @translated("items_finished", ERRORS)
    async def items_finished(
        self, tenant: str, pipeline: str, keys: Sequence[str]
    ) -> dict[str, RunItem]:
        if not keys:
            return {}
        args = {"tenant": tenant, "pipeline": pipeline, "finished": list(FINISHED),
                "keys": list(keys)}  # fmt: skip
        rows = await self._rows(Q["items_finished"], args)
        return {key: item_from_doc(run_id, key, seq, doc) for run_id, key, seq, doc in rows}

    @translated("tick_record", ERRORS)
    async def tick_record(self, tick: Tick) -> Tick:
        first = await self._first(Q["tick_record"], Q["tick_get"], tick_row(tick))
        return tick if first is None else Tick(*first)

    @translated("ticks_list", ERRORS)
    async def ticks_list(self, pipeline: str, before: float | None, limit: int) -> list[Tick]:
        args = {"pipeline": pipeline, "before": before, "limit": limit}
        return [Tick(*r) for r in await self._rows(Q["ticks_list"], args)]
