"""The fenced write of decided changes, one statement per batch, shaped by the batch.

Every change travels as one element of parallel arrays that ``unnest`` takes apart, except a
column whose value is the same for every change of the batch: that one is sent once, as a
scalar. A batch of successes shares its status, its finish time, an empty error and an empty
lease, so it sends four arrays (ids, lease tokens, results, histories) instead of fifteen;
psycopg's array dumping was measured as the largest single cost of a worker's loop on
PostgreSQL. The
statement for each shape is built once and kept (there are only a few shapes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from genspool.backends._sql import dumps_or_none, history_or_none
from genspool.core.machine import Change

__all__ = ["apply_statement"]

#: Column -> SQL type, the fence's columns first; every other one is written by a change.
TYPES = {
    "id": "text",
    "expected_status": "text",
    "expected_token": "text",
    "status": "text",
    "attempts": "integer",
    "available_at": "float8",
    "started_at": "float8",
    "retried_at": "float8",
    "finished_at": "float8",
    "lease_token": "text",
    "lease_expires_at": "float8",
    "result": "bytea",
    "error": "bytea",
    "history": "bytea",
    "expires_at": "float8",
}
WRITTEN = tuple(TYPES)[3:]


def _columns(changes: Sequence[Change]) -> dict[str, list[Any]]:
    jobs = [c.job for c in changes]
    return {
        "id": [j.id for j in jobs],
        "expected_status": [c.status.value for c in changes],
        "expected_token": [c.lease_token for c in changes],
        "status": [j.status.value for j in jobs],
        "attempts": [j.attempts for j in jobs],
        "available_at": [j.available_at for j in jobs],
        "started_at": [j.started_at for j in jobs],
        "retried_at": [j.retried_at for j in jobs],
        "finished_at": [j.finished_at for j in jobs],
        "lease_token": [j.lease_token for j in jobs],
        "lease_expires_at": [j.lease_expires_at for j in jobs],
        "result": [dumps_or_none(j.result) for j in jobs],
        "error": [dumps_or_none(j.error) for j in jobs],
        "history": [history_or_none(j.history) for j in jobs],
        "expires_at": [j.expires_at for j in jobs],
    }


def _same(values: list[Any]) -> bool:
    first = values[0]
    return all(v == first and type(v) is type(first) for v in values)


def apply_statement(changes: Sequence[Change]) -> tuple[bytes, dict[str, Any]]:
    """The statement and parameters that write ``changes`` under their fences."""
    columns = _columns(changes)
    scalars = frozenset(k for k, v in columns.items() if k != "id" and _same(v))
    params = {k: v[0] if k in scalars else v for k, v in columns.items()}
    return _statement(scalars), params


@functools.lru_cache(maxsize=64)
def _statement(scalars: frozenset[str]) -> bytes:
    def value(column: str) -> str:
        if column in scalars:
            return f"%({column})s::{TYPES[column]}"
        return f"c.{column}"

    arrays = [c for c in TYPES if c not in scalars]
    unnest = ", ".join(f"%({c})b::{TYPES[c]}[]" for c in arrays)
    sets = ", ".join(f"{c} = {value(c)}" for c in WRITTEN)
    return (
        f"UPDATE jobs SET {sets} FROM unnest({unnest}) AS c ({', '.join(arrays)}) "
        f"WHERE jobs.id = c.id AND jobs.status = {value('expected_status')} "
        f"AND jobs.lease_token IS NOT DISTINCT FROM {value('expected_token')} "
        "RETURNING jobs.id"
    ).encode()
