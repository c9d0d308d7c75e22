"""The base of the SQLite backend's record roles (files, batches, webhooks, pipelines): reads
on the reader's connection, each write one transaction on the writer's."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from genspool.backends._records import SQLRecords
from genspool.backends.sqlite._conn import Connection, write

__all__ = ["ERRORS", "SQLiteRecords"]

ERRORS = (sqlite3.Error,)


class SQLiteRecords(SQLRecords[str]):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    _w: Connection
    _r: Connection

    async def _rows(self, query: str, args: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        return await self._r.run(lambda db: db.execute(query, args).fetchall())

    async def _written(self, query: str, args: Mapping[str, Any] | Sequence[Any]) -> int:
        return await self._w.run(write(lambda db: db.execute(query, args).rowcount))
