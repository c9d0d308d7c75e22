"""The BatchStore role of the SQLite backend: records of batches in the ``batches`` table
(migration 8), reads on the reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

from genspool.backends._errors import translated
from genspool.backends._records import page_query, versioned_row
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.batch import Batch, batch_from_doc, batch_to_doc
from genspool.core.roles import BatchFilter, BatchStore

__all__ = ["SQLiteBatches"]

Q = load_queries("sqlite", source="batches.sql")


class SQLiteBatches(SQLiteRecords, BatchStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    @translated("batch_put", ERRORS)
    async def batch_put(self, batch: Batch) -> None:
        await self._written(Q["batch_put"], versioned_row(batch, batch_to_doc(batch)))

    @translated("batch_get", ERRORS)
    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None:
        return await self._doc(Q["batch_get"], {"id": batch_id, "tenant": tenant}, batch_from_doc)

    @translated("batch_list", ERRORS)
    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        query, args = page_query(
            "batches", "doc", {"tenant": flt.tenant}, after=flt.after, limit=flt.limit, mark=":{}"
        )
        return await self._docs(query, args, batch_from_doc)

    @translated("batch_update", ERRORS)
    async def batch_update(self, batch: Batch, version: int) -> bool:
        return await self._swap(
            Q["batch_update"], versioned_row(batch, batch_to_doc(batch)), version
        )

    @translated("batches_active", ERRORS)
    async def batches_active(self, limit: int) -> list[Batch]:
        return await self._docs(Q["batches_active"], {"limit": limit}, batch_from_doc)
