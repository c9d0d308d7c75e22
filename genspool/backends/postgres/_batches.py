"""The BatchStore role of the PostgreSQL backend: records of batches in the ``batches`` table
(migration 7), each call one statement on a pooled connection."""

from __future__ import annotations

import psycopg

from genspool.backends._batches import batch_row
from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends.postgres._pool import Connections
from genspool.core.batch import Batch, batch_from_doc
from genspool.core.roles import BatchFilter, BatchStore

__all__ = ["PostgresBatches"]

Q = {name: text.encode() for name, text in load_queries("postgres", source="batches.sql").items()}
_ERRORS = (psycopg.Error,)


class PostgresBatches(BatchStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    kind: str
    shown_url: str
    _db: Connections

    @translated("batch_put", _ERRORS)
    async def batch_put(self, batch: Batch) -> None:
        await self._db.count(Q["batch_put"], batch_row(batch))

    @translated("batch_get", _ERRORS)
    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None:
        found = await self._db.fetch(Q["batch_get"], {"id": batch_id, "tenant": tenant})
        return batch_from_doc(found[0][0]) if found else None

    @translated("batch_list", _ERRORS)
    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        args = {"tenant": flt.tenant, "after": flt.after, "limit": flt.limit}
        return [batch_from_doc(r[0]) for r in await self._db.fetch(Q["batch_list"], args)]

    @translated("batch_update", _ERRORS)
    async def batch_update(self, batch: Batch, version: int) -> bool:
        return bool(
            await self._db.count(Q["batch_update"], {**batch_row(batch), "version": version})
        )

    @translated("batches_active", _ERRORS)
    async def batches_active(self, limit: int) -> list[Batch]:
        found = await self._db.fetch(Q["batches_active"], {"limit": limit})
        return [batch_from_doc(r[0]) for r in found]
