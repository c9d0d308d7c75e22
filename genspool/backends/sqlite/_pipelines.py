"""The PipelineStore role of the SQLite backend: runs, their items and the ticks of schedules
in the ``runs``, ``run_items`` and ``ticks`` tables (migration 10), reads on the reader's
connection, writes each one transaction on the writer's."""

from __future__ import annotations

from collections.abc import Sequence

from genspool.backends._errors import translated
from genspool.backends._pipelines import FINISHED, item_rows, run_row, tick_row
from genspool.backends._records import page_query
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._conn import write
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.pipeline import (
    ItemStatus,
    PipelineRun,
    RunItem,
    Tick,
    item_from_doc,
    run_from_doc,
)
from genspool.core.roles import PipelineStore, RunFilter

__all__ = ["SQLitePipelines"]

Q = load_queries("sqlite", source="pipelines.sql")
#: Keys per read of ``items_finished``: under SQLITE_MAX_VARIABLE_NUMBER of builds older than
#: 3.32 (999), with the four other parameters.
KEYS_CHUNK = 900


class SQLitePipelines(SQLiteRecords, PipelineStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

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
            limit=flt.limit, mark=":{}",
        )  # fmt: skip
        return await self._docs(query, args, run_from_doc)

    @translated("run_update", ERRORS)
    async def run_update(self, run: PipelineRun, version: int) -> bool:
        return await self._swap(Q["run_update"], run_row(run), version)

    @translated("runs_active", ERRORS)
    async def runs_active(self, limit: int) -> list[PipelineRun]:
        return await self._docs(Q["runs_active"], {"limit": limit}, run_from_doc)

    @translated("items_put", ERRORS)
    async def items_put(self, items: Sequence[RunItem]) -> None:
        rows = item_rows(items)  # one transaction: 1000 items in a few ms
        if rows:
            await self._w.run(write(lambda db: db.executemany(Q["items_put"], rows)))

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
        found: dict[str, RunItem] = {}
        for i in range(0, len(keys), KEYS_CHUNK):
            chunk = list(keys[i : i + KEYS_CHUNK])
            query = Q["items_finished"].replace("{keys}", ",".join("?" * len(chunk)))
            rows = await self._rows(query, [tenant, pipeline, *FINISHED, *chunk])
            for run_id, key, seq, doc in sorted(rows):  # by run: the latest run's item kept
                found[key] = item_from_doc(run_id, key, seq, doc)
        return found

    @translated("tick_record", ERRORS)
    async def tick_record(self, tick: Tick) -> Tick:
        first = await self._first(Q["tick_record"], Q["tick_get"], tick_row(tick))
        return tick if first is None else Tick(*first)

    @translated("ticks_list", ERRORS)
    async def ticks_list(self, pipeline: str, before: float | None, limit: int) -> list[Tick]:
        args = {"pipeline": pipeline, "before": before, "limit": limit}
        return [Tick(*r) for r in await self._rows(Q["ticks_list"], args)]
