"""The roles' methods of the SQLite backend: each one transaction on the writer's connection
(``BEGIN IMMEDIATE``), or one read on the reader's.

The backend decides nothing: statuses come from :mod:`genspool.core` (a lease's from its
:class:`~genspool.core.machine.LeaseSpec`) and a transition's new fields from the
:class:`~genspool.core.machine.Change` it writes under its fence.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from genspool.backends._errors import translated
from genspool.backends._sql import (
    COLUMNS,
    dumps_or_none,
    history_or_none,
    job_to_row,
    load_queries,
    row_to_job,
)
from genspool.backends._urls import shown_url
from genspool.backends.sqlite._batches import SQLiteBatches
from genspool.backends.sqlite._conn import Connection, migrate, write
from genspool.backends.sqlite._drift import SQLiteDrift
from genspool.backends.sqlite._files import SQLiteFiles
from genspool.backends.sqlite._pipelines import SQLitePipelines
from genspool.backends.sqlite._prompts import SQLitePrompts
from genspool.backends.sqlite._vectors import SQLiteChunks, SQLiteVectors
from genspool.backends.sqlite._webhooks import SQLiteWebhooks
from genspool.core.gcra import gcra
from genspool.core.job import WAITING, Job, JobStatus
from genspool.core.machine import Change, LeaseSpec
from genspool.core.roles import (
    Coordination,
    JobFilter,
    JobQueue,
    JobStore,
    KeyValue,
    RouteStore,
    Signals,
)
from genspool.exceptions import BackendError

__all__ = ["SQLiteBackend"]

Q = load_queries("sqlite", columns=COLUMNS)
_ERRORS = (sqlite3.Error,)
#: Ids per fence read: under SQLITE_MAX_VARIABLE_NUMBER of builds older than 3.32 (999).
_FENCE_CHUNK = 900


def _literals(statuses: Iterable[str]) -> str:
    """Status literals for an ``IN (...)`` list, each checked to be a status (so nothing but a
    status name is ever written into SQL), in the order :class:`JobStatus` declares them: the
    order the partial indexes of the migrations list them in. SQLite uses a partial index only
    when the query's IN list is the index's own, in the same order, and never when its values
    are bound parameters (measured on 3.40: the lease then scans the table and sorts)."""
    wanted = {JobStatus(s) for s in statuses}
    return ", ".join(f"'{s.value}'" for s in JobStatus if s in wanted)


@functools.cache
def _query(name: str, **statuses: tuple[str, ...]) -> str:
    """``Q[name]`` with each ``{placeholder}`` replaced by the literals of its statuses."""
    sql = Q[name]
    for placeholder, values in statuses.items():
        sql = sql.replace("{" + placeholder + "}", _literals(values))
    return sql


_WAITING = tuple(s.value for s in WAITING)
#: A status as the plain str sqlite3 binds directly. sqlite3 runs any other type through its
#: adapter lookup (an enum member's failing attribute lookups cost ~2 us a row on the write of
#: a batch, measured), and ``.value`` of an enum is a Python-level property: a dict is cheaper.
_TEXT = {s: s.value for s in JobStatus}


def _new_row(j: Job) -> tuple[Any, ...]:
    """The parameters of the ``insert`` query."""
    return (
        j.id, j.tenant, j.url, j.model, orjson.dumps(j.body), _TEXT[j.status], j.priority,
        j.attempts, j.max_attempts, j.idempotency_key,
        dumps_or_none(j.metadata) if j.metadata else None, j.expires_at, j.created_at,
        j.available_at or j.created_at, j.rank,
    )  # fmt: skip


def _written_row(c: Change) -> tuple[Any, ...]:
    """The parameters of the ``write`` query: what a transition may change, the id, the fence."""
    j = c.job
    result, error = j.result, j.error
    return (
        _TEXT[j.status], j.attempts, j.available_at, j.started_at, j.retried_at, j.finished_at,
        j.lease_token, j.lease_expires_at, None if result is None else orjson.dumps(result),
        None if error is None else orjson.dumps(error), history_or_none(j.history), j.expires_at,
        j.id, _TEXT[c.status], c.lease_token,
    )  # fmt: skip


def _write_fenced(db: sqlite3.Connection, changes: Sequence[Change]) -> list[Change]:
    """Write the changes whose fence holds, in one transaction; returns them.

    One fenced ``executemany`` does it when every fence holds, the bulk of the traffic: a
    separate read of the fences first cost 1 us a row more (measured, 256-row batches of
    successes: 10.3 us a row against 11.4). When some fence failed, ``executemany`` cannot say
    which, so the transaction starts again: read the fences, write the changes that hold."""
    rows = [_written_row(c) for c in changes]
    if db.executemany(Q["write"], rows).rowcount == len(rows):
        return list(changes)
    db.execute("ROLLBACK")
    db.execute("BEGIN IMMEDIATE")
    held = _held(db, changes)
    db.executemany(Q["write"], [_written_row(c) for c in held])
    return held


def _held(db: sqlite3.Connection, changes: Sequence[Change]) -> list[Change]:
    """The changes whose stored (status, lease_token) is still the one they were decided on,
    in order; a later change of the same job is checked against the earlier one's result."""
    ids = list(dict.fromkeys([c.job.id for c in changes]))
    stored: dict[str, tuple[str, str | None]] = {}
    for i in range(0, len(ids), _FENCE_CHUNK):
        chunk = ids[i : i + _FENCE_CHUNK]
        sql = Q["fence"].replace("{ids}", ",".join("?" * len(chunk)))
        stored.update({job_id: (s, t) for job_id, s, t in db.execute(sql, chunk)})
    held = []
    for change in changes:  # a JobStatus is a str: it compares equal to the stored text
        job = change.job
        if stored.get(job.id) == (change.status, change.lease_token):
            held.append(change)
            stored[job.id] = (job.status, job.lease_token)
    return held


def _bump(db: sqlite3.Connection) -> int:
    """Move the routes' revision on, in the caller's transaction; returns the new one."""
    return int(db.execute(Q["routes_bump"]).fetchall()[0][0])


#: Every table the migrations make, emptied by ``destroy``.
TABLES = (
    "jobs", "slots", "limits", "kv", "routes", "files", "batches", "webhooks", "runs",
    "run_items", "ticks", "vector_stores", "vector_files", "chunks", "chunk_heads",
    "chunk_revisions", "embedding_cache", "drift_samples",
    "prompt_versions", "prompt_labels", "prompt_audit",
)  # fmt: skip


class SQLiteBackend(
    JobQueue,
    JobStore,
    Coordination,
    KeyValue,
    Signals,
    RouteStore,
    SQLiteFiles,
    SQLiteBatches,
    SQLiteWebhooks,
    SQLitePipelines,
    SQLiteVectors,
    SQLiteChunks,
    SQLiteDrift,
    SQLitePrompts,
):
    kind = "SQLite"

    def __init__(
        self, path: str | os.PathLike[str] = "genspool.db", *, synchronous: str = "NORMAL"
    ) -> None:
        super().__init__()
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise BackendError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.path = str(path)
        self.shown_url = shown_url(f"sqlite:///{self.path}")
        self._w = Connection(self.path, synchronous.upper(), "w")
        self._r = Connection(self.path, synchronous.upper(), "r")

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db``; ``?synchronous=FULL``."""
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise BackendError(f"{url!r} names no database file; use sqlite:///genspool.db")
        sync = parse_qs(parts.query).get("synchronous", ["NORMAL"])[0]
        return cls(path, synchronous=sync)

    # -- resource ----------------------------------------------------------------------------

    @translated("connect", _ERRORS)
    async def connect(self) -> None:
        parent = Path(self.path).parent
        if not parent.exists():
            raise BackendError(f"cannot create {self.path}: directory {parent} does not exist")
        await self._w.run(migrate, inline=False)

    async def close(self) -> None:
        await self._w.close()
        await self._r.close()

    @translated("destroy", _ERRORS)
    async def destroy(self) -> None:
        def drop(db: sqlite3.Connection) -> None:
            for table in TABLES:
                db.execute(f"DELETE FROM {table}")
            _bump(db)  # the revision goes on: a process polling it reloads the empty set

        await self._w.run(write(drop), inline=False)

    # -- queue -------------------------------------------------------------------------------

    @translated("enqueue", _ERRORS)
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        rows = [_new_row(j) for j in jobs]

        def insert(db: sqlite3.Connection) -> list[Job]:
            if all(j.idempotency_key is None for j in jobs):
                db.executemany(Q["insert"], rows)
                return list(jobs)
            out = []
            for job, row in zip(jobs, rows, strict=True):
                if db.execute(Q["insert"], row).rowcount or job.idempotency_key is None:
                    out.append(job)
                else:
                    found = db.execute(Q["by_idempotency_key"], (job.tenant, job.idempotency_key))
                    out.append(row_to_job(found.fetchone()))
            return out

        stored = await self._w.run(write(insert))
        for model in {j.model for j in jobs}:
            self.notify(model)
        return stored

    @translated("lease", _ERRORS)
    async def lease(self, spec: LeaseSpec) -> list[Job]:
        sql = _query("lease", waiting=spec.waiting)
        args = {
            "running": spec.running,
            "token": spec.token,
            "until": spec.until,
            "step": spec.attempts_step,
            "now": spec.now,
            "model": spec.model,
            "limit": spec.limit,
            "worker": spec.worker,
        }

        def lease(db: sqlite3.Connection) -> list[Job]:
            jobs = [row_to_job(r) for r in db.execute(sql, args).fetchall()]
            jobs.sort(key=lambda j: (-j.priority, j.rank, j.available_at))  # RETURNING: no order
            return jobs

        return await self._w.run(write(lease))

    @translated("extend", _ERRORS)
    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        running = JobStatus.RUNNING.value
        rows = [(until, job_id, token, running) for job_id, token in held]
        return await self._w.run(write(lambda db: db.executemany(Q["extend"], rows).rowcount))

    @translated("apply", _ERRORS)
    async def apply(self, changes: Sequence[Change]) -> set[str]:
        if not changes:
            return set()
        held = await self._w.run(write(lambda db: _write_fenced(db, changes)))
        for model in {c.job.model for c in held if c.job.status in WAITING}:
            self.notify(model)
        return {c.job.id for c in held}

    @translated("get_many", _ERRORS)
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        return await self._select(
            f"SELECT {COLUMNS} FROM jobs WHERE id IN ({marks})", tuple(job_ids)
        )

    @translated("stale_leases", _ERRORS)
    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        return await self._select(Q["stale_leases"], (JobStatus.RUNNING.value, now, limit))

    @translated("overdue", _ERRORS)
    async def overdue(self, now: float, limit: int) -> list[Job]:
        return await self._select(_query("overdue", waiting=_WAITING), (now, limit))

    @translated("purge", _ERRORS)
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        sql = _query("purge", statuses=tuple(statuses))
        purge = write(lambda db: db.execute(sql, (finished_before,)).rowcount)
        return await self._w.run(purge, inline=False)

    @translated("depth", _ERRORS)
    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        sql = _query("depth", statuses=tuple(statuses))

        def depth(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for model, status, count in db.execute(sql):
                out.setdefault(model, {})[status] = count
            return out

        return await self._r.run(depth, inline=False)

    @translated("oldest_waiting", _ERRORS)
    async def oldest_waiting(self) -> dict[str, float]:
        sql = _query("oldest_waiting", waiting=_WAITING)
        return await self._r.run(lambda db: dict(db.execute(sql).fetchall()), inline=False)

    # -- store -------------------------------------------------------------------------------

    @translated("list_jobs", _ERRORS)
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        where, args = [], []
        for column, value in (("status", flt.status), ("model", flt.model), ("tenant", flt.tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value))
        if flt.before is not None:
            where.append("id < ?")
            args.append(flt.before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT ?"
        return await self._select(sql, (*args, flt.limit))

    @translated("put", _ERRORS)
    async def put(self, jobs: Sequence[Job]) -> None:
        rows = [job_to_row(j) for j in jobs]
        await self._w.run(write(lambda db: db.executemany(Q["put"], rows)))

    # -- coordination ------------------------------------------------------------------------

    @translated("acquire_slot", _ERRORS)
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            db.execute(Q["slot_prune"], (name, now))
            if db.execute(Q["slot_renew"], (now + ttl_s, name, holder)).rowcount:
                return True
            if db.execute(Q["slot_count"], (name,)).fetchone()[0] >= limit:
                return False
            db.execute(Q["slot_take"], (name, holder, now + ttl_s))
            return True

        return await self._w.run(write(take))

    @translated("release_slot", _ERRORS)
    async def release_slot(self, name: str, holder: str) -> None:
        await self._w.run(write(lambda db: db.execute(Q["slot_release"], (name, holder))))

    @translated("reserve", _ERRORS)
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        def take(db: sqlite3.Connection) -> float:
            row = db.execute(Q["limit_get"], (key,)).fetchone()
            tat, wait = gcra(row[0] if row else None, now, cost, rate_per_s, burst)
            if wait == 0.0:
                db.execute(Q["limit_set"], (key, tat))
            return wait

        return await self._w.run(write(take))

    async def server_time(self) -> float:
        # Every process on a SQLite file runs on this machine, under this clock.
        return time.time()

    # -- key-value ---------------------------------------------------------------------------

    @translated("kv_put", _ERRORS)
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._w.run(write(lambda db: db.execute(Q["kv_put"], (namespace, key, value))))

    @translated("kv_get", _ERRORS)
    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        row = await self._r.run(lambda db: db.execute(Q["kv_get"], (namespace, key)).fetchone())
        return None if row is None else bytes(row[0])

    @translated("kv_list", _ERRORS)
    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        rows = await self._r.run(lambda db: db.execute(Q["kv_list"], (namespace,)).fetchall())
        return {k: bytes(v) for k, v in rows}

    @translated("kv_delete", _ERRORS)
    async def kv_delete(self, namespace: str, key: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute(Q["kv_delete"], (namespace, key)).rowcount > 0

        return await self._w.run(write(delete))

    # -- routes ------------------------------------------------------------------------------

    @translated("route_put", _ERRORS)
    async def route_put(self, name: str, doc: bytes) -> int:
        def put(db: sqlite3.Connection) -> int:
            db.execute(Q["route_put"], (name, doc))
            return _bump(db)

        return await self._w.run(write(put))

    @translated("route_get", _ERRORS)
    async def route_get(self, name: str) -> bytes | None:
        row = await self._r.run(lambda db: db.execute(Q["route_get"], (name,)).fetchone())
        return None if row is None else bytes(row[0])

    @translated("route_list", _ERRORS)
    async def route_list(self) -> dict[str, bytes]:
        rows = await self._r.run(lambda db: db.execute(Q["route_list"]).fetchall())
        return {name: bytes(doc) for name, doc in rows}

    @translated("route_delete", _ERRORS)
    async def route_delete(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute(Q["route_delete"], (name,)).rowcount > 0 and _bump(db) > 0

        return await self._w.run(write(delete))

    @translated("routes_revision", _ERRORS)
    async def routes_revision(self) -> int:
        row = await self._r.run(lambda db: db.execute(Q["routes_revision"]).fetchone())
        return int(row[0])

    async def _select(self, sql: str, args: Sequence[Any]) -> list[Job]:
        return await self._r.run(lambda db: [row_to_job(r) for r in db.execute(sql, args)])
