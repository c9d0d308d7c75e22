"""The DriftSamples role of the PostgreSQL backend: samples in the ``drift_samples`` table
(migration 12), each call one statement on a pooled connection."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.roles import DriftSample, DriftSamples

__all__ = ["PostgresDrift"]

Q = encoded(load_queries("postgres", source="drift.sql"))
_FIELDS = [f.name for f in dataclasses.fields(DriftSample)]


def _sample(
    id: str, model: str, at: float, prompt: int, output: int, embed: str, vector: Any, tenant: str
) -> DriftSample:
    return DriftSample(id, model, at, prompt, output, embed, bytes(vector), tenant)


class PostgresDrift(PostgresRecords, DriftSamples):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("drift_put", ERRORS)
    async def drift_put(self, samples: Sequence[DriftSample]) -> int:
        if not samples:
            return 0
        unique = list({s.id: s for s in reversed(samples)}.values())  # one statement, one row each
        columns = {f: [getattr(s, f) for s in unique] for f in _FIELDS}
        return await self._written(Q["drift_put"], columns)

    @translated("drift_list", ERRORS)
    async def drift_list(
        self, model: str, start: float, end: float, limit: int
    ) -> list[DriftSample]:
        args = {"model": model, "start": start, "end": end, "limit": limit}
        rows = await self._rows(Q["drift_list"], args)
        return [_sample(*row) for row in rows]

    @translated("drift_models", ERRORS)
    async def drift_models(self) -> list[str]:
        return [row[0] for row in await self._rows(Q["drift_models"], {})]

    @translated("drift_purge", ERRORS)
    async def drift_purge(self, before: float) -> int:
        return await self._written(Q["drift_purge"], {"before": before})
