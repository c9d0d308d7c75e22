"""The BatchStore role of the SQLite backend: records of batches in the ``batches`` table
(migration 8), reads on the reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

import sqlite3

from genspool.backends._batches import batch_row
from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._conn import Connection, write
from genspool.core.batch import Batch, batch_from_doc
from genspool.core.roles import BatchFilter, BatchStore

__all__ = ["SQLiteBatches"]

Q = load_queries("sqlite", source="batches.sql")
_ERRORS = (sqlite3.Error,)


class SQLiteBatches(BatchStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    kind: str
    shown_url: str
    _w: Connection
    _r: Connection

    @translated("batch_put", _ERRORS)
    async def batch_put(self, batch: Batch) -> None:
        r = batch_row(batch)
        row = (r["id"], r["tenant"], int(r["active"]), r["version"], r["doc"])
        await self._w.run(write(lambda db: db.execute(Q["batch_put"], row)))

    @translated("batch_get", _ERRORS)
    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None:
        args = {"id": batch_id, "tenant": tenant}
        row = await self._r.run(lambda db: db.execute(Q["batch_get"], args).fetchone())
        return None if row is None else batch_from_doc(row[0])

    @translated("batch_list", _ERRORS)
    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        args = {"tenant": flt.tenant, "after": flt.after, "limit": flt.limit}
        rows = await self._r.run(lambda db: db.execute(Q["batch_list"], args).fetchall())
        return [batch_from_doc(r[0]) for r in rows]

    @translated("batch_update", _ERRORS)
    async def batch_update(self, batch: Batch, version: int) -> bool:
        args = {**batch_row(batch), "version": version}
        args["active"] = int(args["active"])
        count = await self._w.run(write(lambda db: db.execute(Q["batch_update"], args).rowcount))
        return bool(count)

    @translated("batches_active", _ERRORS)
    async def batches_active(self, limit: int) -> list[Batch]:
        rows = await self._r.run(lambda db: db.execute(Q["batches_active"], (limit,)).fetchall())
        return [batch_from_doc(r[0]) for r in rows]
