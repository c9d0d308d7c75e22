"""The DriftSamples role of the SQLite backend: samples in the ``drift_samples`` table
(migration 13), reads on the reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._conn import write
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.roles import DriftSample, DriftSamples

__all__ = ["SQLiteDrift"]

Q = load_queries("sqlite", source="drift.sql")


class SQLiteDrift(SQLiteRecords, DriftSamples):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    @translated("drift_put", ERRORS)
    async def drift_put(self, samples: Sequence[DriftSample]) -> int:
        rows = [dataclasses.astuple(s) for s in samples]
        if not rows:
            return 0
        return int(
            await self._w.run(write(lambda db: db.executemany(Q["drift_put"], rows).rowcount))
        )

    @translated("drift_list", ERRORS)
    async def drift_list(
        self, model: str, start: float, end: float, limit: int
    ) -> list[DriftSample]:
        args = {"model": model, "start": start, "end": end, "limit": limit}
        return [DriftSample(*row) for row in await self._rows(Q["drift_list"], args)]

    @translated("drift_models", ERRORS)
    async def drift_models(self) -> list[str]:
        return [row[0] for row in await self._rows(Q["drift_models"], {})]

    @translated("drift_purge", ERRORS)
    async def drift_purge(self, before: float) -> int:
        return await self._written(Q["drift_purge"], {"before": before})
