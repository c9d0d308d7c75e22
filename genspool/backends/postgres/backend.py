"""The PostgreSQL backend class: every storage role over one schema (see the package's
docstring for the design), each public method one translated call into :mod:`._pool`'s
connections and the named queries of ``sql/postgres/queries.sql``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from genspool.backends._errors import translated
from genspool.backends._sql import COLUMNS, dumps_or_none, job_to_row, row_to_job
from genspool.backends._urls import shown_url
from genspool.backends.postgres._apply import apply_statement
from genspool.backends.postgres._batches import PostgresBatches
from genspool.backends.postgres._drift import PostgresDrift
from genspool.backends.postgres._files import PostgresFiles
from genspool.backends.postgres._pipelines import PostgresPipelines
from genspool.backends.postgres._pool import Conn, Connections, Q, Settings, rows
from genspool.backends.postgres._prompts import PostgresPrompts
from genspool.backends.postgres._signals import EVENTS_KEEP_S, Listener, inline
from genspool.backends.postgres._vectors import PostgresChunks, PostgresVectors
from genspool.backends.postgres._webhooks import PostgresWebhooks
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

__all__ = ["PostgresBackend"]

ERRORS = (psycopg.Error,)  # PoolTimeout and PoolClosed included
#: While the work channel is listened to, an idle worker still looks this often (a NOTIFY may
#: be lost while the listening connection is down and not yet known to be).
IDLE_POLL_S = 1.0
_RUNNING = JobStatus.RUNNING.value
_WAITING = sorted(s.value for s in WAITING)
_COLUMN_NAMES = COLUMNS.split(", ")


def _new_arrays(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """The columns of new ``jobs`` as parallel arrays, the shape ``unnest`` takes apart."""
    return {
        "id": [j.id for j in jobs],
        "tenant": [j.tenant for j in jobs],
        "url": [j.url for j in jobs],
        "model": [j.model for j in jobs],
        "body": [orjson.dumps(j.body) for j in jobs],
        "status": [j.status.value for j in jobs],
        "priority": [j.priority for j in jobs],
        "attempts": [j.attempts for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "idempotency_key": [j.idempotency_key for j in jobs],
        "metadata": [dumps_or_none(j.metadata) if j.metadata else None for j in jobs],
        "expires_at": [j.expires_at for j in jobs],
        "created_at": [j.created_at for j in jobs],
        "available_at": [j.available_at or j.created_at for j in jobs],
        "rank": [j.rank for j in jobs],
    }


def _record_arrays(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """Whole records as one array per column of ``COLUMNS``."""
    columns = zip(*(job_to_row(j) for j in jobs), strict=True)
    return {name: list(values) for name, values in zip(_COLUMN_NAMES, columns, strict=True)}


#: Every table the migrations make, emptied by ``destroy`` (``routes`` by ``routes_clear``,
#: which moves the revision on, as ``routes_revision`` never goes back).
TABLES = (
    "jobs", "slots", "limits", "kv", "events", "files", "blob_chunks", "batches", "webhooks",
    "runs", "run_items", "ticks", "vector_stores", "vector_files", "chunks", "chunk_heads",
    "chunk_revisions", "embedding_cache", "drift_samples",
    "prompt_versions", "prompt_labels", "prompt_audit",
)  # fmt: skip


class PostgresBackend(
    JobQueue,
    JobStore,
    Coordination,
    KeyValue,
    Signals,
    RouteStore,
    PostgresFiles,
    PostgresBatches,
    PostgresWebhooks,
    PostgresPipelines,
    PostgresVectors,
    PostgresChunks,
    PostgresDrift,
    PostgresPrompts,
):
    kind = "PostgreSQL"
    #: Each call (but connect, destroy, purge) fails as a BackendError after this long.
    call_timeout_s: float | None = 5.0
    cross_process_events = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "genspool",
        pool_min: int = 1,
        pool_max: int = 10,
        pool_timeout: float = 5.0,
        display: str | None = None,
    ) -> None:
        super().__init__()
        self.shown_url = display or shown_url(conninfo)
        settings = Settings(conninfo, schema, pool_min, pool_max, pool_timeout)
        self.schema = schema
        self._db = Connections(settings, self.shown_url)
        self._listener = Listener(self._db, self._wakeups)

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        """``postgresql://user:pw@host:5432/db?schema=genspool&pool_min=1&pool_max=10``;
        ``pool_timeout`` (seconds) bounds the wait for a pooled connection. Other query
        parameters go to libpq as they are (``sslmode``, ``application_name``, ...)."""
        shown = shown_url(url)
        s = Settings.from_url(url, shown)
        return cls(
            s.conninfo,
            schema=s.schema,
            pool_min=s.pool_min,
            pool_max=s.pool_max,
            pool_timeout=s.pool_timeout,
            display=shown,
        )

    # -- resource ----------------------------------------------------------------------------

    @translated("connect", ERRORS)
    async def connect(self) -> None:
        await self._db.open()
        self._listener.start()
        if not self._listener.listening.is_set():  # so a broadcast right after connect arrives
            with contextlib.suppress(TimeoutError):
                timeout = self._db.settings.pool_timeout
                await asyncio.wait_for(self._listener.listening.wait(), timeout)

    async def close(self) -> None:
        await self._listener.stop()
        if self._pgvector_of is not None:  # its index builds and fills under way
            await self._pgvector_of.aclose()
        await self._db.close()
        self._wakeups.clear()

    @translated("destroy", ERRORS)
    async def destroy(self) -> None:
        # Rows, not the schema: dropping and migrating again took ~200 ms, DELETE of the few
        # rows a test leaves takes a few (the model-based test empties the store 200 times).
        async with self._db.conn() as conn, conn.transaction():
            for table in TABLES:
                await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
            await conn.execute(Q["routes_clear"])

    @translated("drop", ERRORS)
    async def drop(self) -> None:
        if self._pgvector_of is not None:  # an index build would hold the schema's tables
            await self._pgvector_of.aclose()
        async with self._db.conn() as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            await conn.execute(drop.format(sql.Identifier(self.schema)))

    # -- queue -------------------------------------------------------------------------------

    @translated("enqueue", ERRORS)
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        params = _new_arrays(jobs)
        async with self._db.conn() as conn:
            if all(j.idempotency_key is None for j in jobs):
                await conn.execute(Q["insert"], params)
                stored = new = list(jobs)
            else:
                found = await rows(conn, Q["insert_keyed"], params)
                new = [j for j, r in zip(jobs, found, strict=True) if r[0]]
                stored = await self._resolve_keys(conn, jobs, found)
            ready = [(j.model, j.available_at or j.created_at) for j in new]
            await self._listener.wake_others(conn, ready)
        for model in {j.model for j in jobs}:
            self.notify(model)
        return stored

    @staticmethod
    async def _resolve_keys(
        conn: Conn, jobs: Sequence[Job], found: list[tuple[Any, ...]]
    ) -> list[Job]:
        """Each input job, or the job that already held its idempotency key."""
        pairs = list(zip(jobs, found, strict=True))
        taken = {(j.tenant, j.idempotency_key): j for j, r in pairs if r[0]}
        out = []
        for job, row in pairs:
            key = (job.tenant, job.idempotency_key)
            if row[0] or job.idempotency_key is None:
                out.append(job)
            elif row[1] is not None:  # stored before this batch
                out.append(row_to_job(row[1:]))
            elif key in taken:  # taken by an earlier job of this batch
                out.append(taken[key])
            else:  # committed by another process after this statement began
                params = {"tenant": job.tenant, "key": job.idempotency_key}
                again = await rows(conn, Q["by_idempotency_key"], params)
                out.append(row_to_job(again[0]) if again else job)
        return out

    @translated("lease", ERRORS)
    async def lease(self, spec: LeaseSpec) -> list[Job]:
        params = {
            "model": spec.model,
            "limit": spec.limit,
            "now": spec.now,
            "until": spec.until,
            "token": spec.token,
            "waiting": list(spec.waiting),
            "running": spec.running,
            "attempts_step": spec.attempts_step,
            "worker": spec.worker,
        }
        jobs = await self._jobs(Q["lease"], params)
        jobs.sort(key=lambda j: (-j.priority, j.rank, j.available_at))  # RETURNING: no order
        return jobs

    @translated("extend", ERRORS)
    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        if not held:
            return 0
        ids, tokens = [i for i, _ in held], [t for _, t in held]
        params = {"id": ids, "token": tokens, "until": until, "running": _RUNNING}
        return await self._db.count(Q["extend"], params)

    @translated("apply", ERRORS)
    async def apply(self, changes: Sequence[Change]) -> set[str]:
        if not changes:
            return set()
        # One change per job, the first: the later ones were decided on the state it replaces,
        # so their fence would fail anyway (and UPDATE ... FROM writes a row once).
        first = list({c.job.id: c for c in reversed(changes)}.values())
        async with self._db.conn() as conn:
            statement, params = apply_statement(first)
            written = {r[0] for r in await rows(conn, statement, params)}
            ready = [c.job for c in first if c.job.id in written and c.job.status in WAITING]
            await self._listener.wake_others(conn, [(j.model, j.available_at) for j in ready])
        for model in {j.model for j in ready}:
            self.notify(model)
        return written

    @translated("get", ERRORS)
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        return await self._jobs(Q["get_many"], {"ids": list(job_ids)}, prepare=None)

    @translated("stale_leases", ERRORS)
    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        params = {"now": now, "limit": limit, "running": _RUNNING}
        return await self._jobs(Q["stale_leases"], params)

    @translated("overdue", ERRORS)
    async def overdue(self, now: float, limit: int) -> list[Job]:
        return await self._jobs(Q["overdue"], {"now": now, "limit": limit, "waiting": _WAITING})

    @translated("purge", ERRORS)
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        params = {
            "statuses": list(statuses),
            "before": finished_before,
            "events_before": time.time() - EVENTS_KEEP_S,
        }
        async with self._db.conn() as conn:
            cur = await conn.execute(Q["purge"], params, prepare=False)
            return cur.rowcount

    @translated("depth", ERRORS)
    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        found = await self._db.fetch(Q["depth"], {"statuses": list(statuses)}, prepare=False)
        for model, status, count in found:
            out.setdefault(model, {})[status] = count
        return out

    @translated("oldest_waiting", ERRORS)
    async def oldest_waiting(self) -> dict[str, float]:
        found = await self._db.fetch(Q["oldest_waiting"], {"waiting": _WAITING}, prepare=False)
        return {model: at for model, at in found}

    async def _jobs(
        self, query: bytes, params: dict[str, Any], *, prepare: bool | None = False
    ) -> list[Job]:
        # Unprepared by default: statuses arrive as parameters, and only a plan made with their
        # values can use the partial indexes of migration 001 (EXPLAIN of a generic plan of
        # lease: a scan and sort of the whole table); planning anew costs tens of microseconds.
        return [row_to_job(r) for r in await self._db.fetch(query, params, prepare=prepare)]

    # -- store -------------------------------------------------------------------------------

    @translated("list", ERRORS)
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        where: list[str] = []
        params: dict[str, Any] = {"limit": flt.limit}
        for column, value in (("status", flt.status), ("model", flt.model), ("tenant", flt.tenant)):
            if value is not None:
                where.append(f"{column} = %({column})s")
                params[column] = str(value)
        if flt.before is not None:
            where.append("id < %(before)s")
            params["before"] = flt.before
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        query = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT %(limit)s"
        return await self._jobs(query.encode(), params)

    @translated("put", ERRORS)
    async def put(self, jobs: Sequence[Job]) -> None:
        if jobs:
            latest = list({j.id: j for j in jobs}.values())  # a row is upserted once
            await self._db.count(Q["put"], _record_arrays(latest))

    # -- coordination ------------------------------------------------------------------------

    @translated("acquire_slot", ERRORS)
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        params = {"name": name, "holder": holder, "limit": limit, "until": now + ttl_s, "now": now}
        found = await self._db.fetch(Q["slot_acquire"], params)
        return bool(found[0][0])

    @translated("release_slot", ERRORS)
    async def release_slot(self, name: str, holder: str) -> None:
        await self._db.count(Q["slot_release"], {"name": name, "holder": holder})

    @translated("server_time", ERRORS)
    async def server_time(self) -> float:
        found = await self._db.fetch(Q["server_time"], {})
        return float(found[0][0])

    @translated("reserve", ERRORS)
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        async with self._db.conn() as conn:
            while True:
                found = await rows(conn, Q["limit_get"], {"key": key})
                old = found[0][0] if found else None
                tat, wait = gcra(old, now, cost, rate_per_s, burst)
                if wait > 0.0:
                    return wait
                if old is None:
                    cur = await conn.execute(Q["limit_insert"], {"key": key, "tat": tat})
                else:
                    cur = await conn.execute(Q["limit_swap"], {"key": key, "tat": tat, "old": old})
                if cur.rowcount:
                    return 0.0
                # Another process moved the bucket between the read and the write: read again.

    # -- key-value ---------------------------------------------------------------------------

    @translated("kv_put", ERRORS)
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._db.count(Q["kv_put"], {"namespace": namespace, "key": key, "value": value})

    @translated("kv_get", ERRORS)
    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        found = await self._db.fetch(Q["kv_get"], {"namespace": namespace, "key": key})
        return bytes(found[0][0]) if found else None

    @translated("kv_list", ERRORS)
    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        found = await self._db.fetch(Q["kv_list"], {"namespace": namespace})
        return {k: bytes(v) for k, v in found}

    @translated("kv_delete", ERRORS)
    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self._db.count(Q["kv_delete"], {"namespace": namespace, "key": key}) > 0

    # -- routes ------------------------------------------------------------------------------

    @translated("route_put", ERRORS)
    async def route_put(self, name: str, doc: bytes) -> int:
        found = await self._db.fetch(Q["route_put"], {"name": name, "doc": doc})
        return int(found[0][0])

    @translated("route_get", ERRORS)
    async def route_get(self, name: str) -> bytes | None:
        found = await self._db.fetch(Q["route_get"], {"name": name})
        return bytes(found[0][0]) if found else None

    @translated("route_list", ERRORS)
    async def route_list(self) -> dict[str, bytes]:
        return {name: bytes(doc) for name, doc in await self._db.fetch(Q["route_list"], {})}

    @translated("route_delete", ERRORS)
    async def route_delete(self, name: str) -> bool:
        return bool(await self._db.fetch(Q["route_delete"], {"name": name}))

    @translated("routes_revision", ERRORS)
    async def routes_revision(self) -> int:
        return int((await self._db.fetch(Q["routes_revision"], {}))[0][0])

    # -- signals -----------------------------------------------------------------------------

    @translated("broadcast", ERRORS)
    async def broadcast(self, payload: bytes) -> None:
        channel, text = self._listener.events_channel, inline(payload)
        if text is not None:
            await self._db.fetch(Q["notify"], {"channel": channel, "payload": "=" + text})
        else:
            params = {"channel": channel, "payload": payload, "now": time.time()}
            await self._db.fetch(Q["event_store"], params)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        self._listener.delivers.append(deliver)
        try:
            self._listener.start()
            await asyncio.Future()  # until cancelled; the listener task does the work
        finally:
            self._listener.delivers.remove(deliver)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        # With the work channel listened to, a NOTIFY ends the wait; the poll is a safety net.
        cap = IDLE_POLL_S if self._listener.listening.is_set() else self.poll_interval_s
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, cap))
        event.clear()
