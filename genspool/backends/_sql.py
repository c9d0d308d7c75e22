"""What the SQL backends share: loading the SQL files that sit in ``backends/sql/<dialect>/``,
and the one row layout of a job.

Migrations are numbered files (``001_init.sql``); queries live in ``queries.sql``, each after a
``-- name: <name>`` line. Every query that returns jobs selects ``{columns}``, which
:func:`row_to_job` reads back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson

from genspool.core.job import Job, JobStatus

__all__ = [
    "COLUMNS",
    "dumps_or_none",
    "history_or_none",
    "job_to_row",
    "load_queries",
    "migrations",
    "row_to_job",
]

COLUMNS = (
    "id, tenant, url, model, body, status, priority, attempts, max_attempts, idempotency_key, "
    "metadata, expires_at, created_at, available_at, started_at, retried_at, finished_at, "
    "lease_token, lease_expires_at, result, error, rank, worker, history"
)
_loads = orjson.loads

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _dir(dialect: str) -> resources.abc.Traversable:
    return resources.files("genspool.backends") / "sql" / dialect


def migrations(dialect: str) -> list[tuple[int, str]]:
    """``(version, sql)`` pairs in order."""
    found = []
    for entry in _dir(dialect).iterdir():
        head = entry.name.split("_", 1)[0]
        if entry.name.endswith(".sql") and head.isdigit():
            found.append((int(head), entry.read_text()))
    return sorted(found)


def load_queries(dialect: str, *, source: str = "queries.sql", **fmt: str) -> dict[str, str]:
    """The named queries of ``sql/<dialect>/<source>``, each ``{key}`` of ``fmt`` written in."""
    text = (_dir(dialect) / source).read_text()
    parts = _NAME.split(text)[1:]
    queries = {}
    for name, sql in zip(parts[::2], parts[1::2], strict=True):
        for key, value in fmt.items():  # not str.format: queries hold JSON braces
            sql = sql.replace("{" + key + "}", value)
        queries[name] = sql.strip()
    return queries


def dumps_or_none(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def history_or_none(history: list[Any]) -> bytes | None:
    """A job's attempt history as stored: NULL while it has none (most jobs, until they end)."""
    return orjson.dumps(history) if history else None


#: Job's fields in the order its constructor takes them, which row_to_job passes positionally.
_JOB_FIELDS = (
    "url", "body", "model", "id", "tenant", "status", "priority", "attempts", "max_attempts",
    "idempotency_key", "metadata", "expires_at", "created_at", "available_at", "rank",
    "started_at", "retried_at", "finished_at", "lease_token", "lease_expires_at", "result",
    "error", "worker", "history",
)  # fmt: skip
if tuple(f.name for f in dataclasses.fields(Job)) != _JOB_FIELDS:  # pragma: no cover
    raise ImportError("Job's fields changed: update row_to_job and _JOB_FIELDS in _sql.py")
_STATUS = {s.value: s for s in JobStatus}


def row_to_job(r: Sequence[Any]) -> Job:
    """A job from a row of ``COLUMNS``; JSON columns hold orjson bytes.

    Every leased job passes here once, so the call is positional and the status a dict lookup:
    half the time of keyword arguments and ``JobStatus(value)`` (measured, 22 fields)."""
    return Job(
        r[2], _loads(r[4]), r[3], r[0], r[1], _STATUS[r[5]], r[6], r[7], r[8], r[9],
        _loads(r[10]) if r[10] else {}, r[11], r[12], r[13], r[21], r[14], r[15], r[16], r[17],
        r[18], _loads(r[19]) if r[19] is not None else None,
        _loads(r[20]) if r[20] is not None else None, r[22], _loads(r[23]) if r[23] else [],
    )  # fmt: skip


def job_to_row(j: Job) -> tuple[Any, ...]:
    """The inverse of :func:`row_to_job`: a job as a row of ``COLUMNS``."""
    return (
        j.id, j.tenant, j.url, j.model, orjson.dumps(j.body), j.status.value, j.priority,
        j.attempts, j.max_attempts, j.idempotency_key,
        dumps_or_none(j.metadata) if j.metadata else None, j.expires_at, j.created_at,
        j.available_at, j.started_at, j.retried_at, j.finished_at, j.lease_token,
        j.lease_expires_at, dumps_or_none(j.result), dumps_or_none(j.error), j.rank, j.worker,
        history_or_none(j.history),
    )  # fmt: skip
