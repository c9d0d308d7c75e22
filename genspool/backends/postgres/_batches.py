"""The BatchStore role of the PostgreSQL backend: records of batches in the ``batches`` table
(migration 7), each call one statement on a pooled connection."""

from __future__ import annotations

from genspool.backends._errors import translated
from genspool.backends._records import page_query, versioned_row
from genspool.backends._sql import load_queries
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.batch import Batch, batch_from_doc, batch_to_doc
from genspool.core.roles import BatchFilter, BatchStore

__all__ = ["PostgresBatches"]

Q = encoded(load_queries("postgres", source="batches.sql"))


class PostgresBatches(PostgresRecords, BatchStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("batch_put", ERRORS)
    async def batch_put(self, batch: Batch) -> None:
        await self._written(Q["batch_put"], versioned_row(batch, batch_to_doc(batch)))

    @translated("batch_get", ERRORS)
    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None:
        return await self._doc(Q["batch_get"], {"id": batch_id, "tenant": tenant}, batch_from_doc)

    @translated("batch_list", ERRORS)
    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        query, args = page_query(
            "batches", "doc", {"tenant": flt.tenant}, after=flt.after, limit=flt.limit,
            mark="%({})s",
        )  # fmt: skip
        return await self._docs(query.encode(), args, batch_from_doc)

    @translated("batch_update", ERRORS)
    async def batch_update(self, batch: Batch, version: int) -> bool:
        return await self._swap(
            Q["batch_update"], versioned_row(batch, batch_to_doc(batch)), version
        )

    @translated("batches_active", ERRORS)
    async def batches_active(self, limit: int) -> list[Batch]:
        return await self._docs(Q["batches_active"], {"limit": limit}, batch_from_doc)
