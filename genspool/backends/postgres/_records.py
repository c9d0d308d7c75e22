"""The base of the PostgreSQL backend's record roles (files, batches, webhooks, pipelines):
each call one statement on a pooled connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from genspool.backends._records import SQLRecords
from genspool.backends.postgres._pool import Connections

__all__ = ["ERRORS", "PostgresRecords", "encoded"]

ERRORS = (psycopg.Error,)


def encoded(queries: Mapping[str, str]) -> dict[str, bytes]:
    """Named queries as psycopg takes them without encoding each call."""
    return {name: text.encode() for name, text in queries.items()}


class PostgresRecords(SQLRecords[bytes]):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    _db: Connections

    async def _rows(self, query: bytes, args: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        return await self._db.fetch(query, args)

    async def _written(self, query: bytes, args: Mapping[str, Any] | Sequence[Any]) -> int:
        return await self._db.count(query, args)
