"""The PostgreSQL backend: queue, store, coordination and cross-process events in one schema.

It owns one schema of a database (``?schema=``, default ``genspool``) and everything in it:
tables made by the numbered files in ``sql/postgres/``, applied in order and recorded in
``schema_version`` under an advisory lock, so processes that start together do not race.

Design choices:

* psycopg 3 async with a small :class:`~psycopg_pool.AsyncConnectionPool` of autocommit
  connections. Every hot path (``enqueue``, ``lease``, ``extend``, ``finish``) is ONE
  statement, hence one round trip whatever the batch size: batches travel as arrays that
  ``unnest`` takes apart. ``lease`` is ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
  LOCKED)`` over a partial index in the lease order; ``finish`` is fenced by lease token and
  ``status = 'running'`` in the same statement that writes.
* ``search_path`` is set at connection startup (``options=-c search_path=...``), so the SQL
  files name no schema and a new connection costs no extra round trip.
* Timestamps are unix seconds in ``double precision``, as the facade computes them. JSON
  payloads are orjson bytes in ``bytea``: the server never parses them and they come back bit
  for bit.
* Events and wake-ups ride LISTEN/NOTIFY on two channels named after the schema. One
  dedicated connection (outside the pool) listens to both and reconnects by itself with a
  capped, jittered backoff. A broadcast over ``INLINE_MAX`` bytes (NOTIFY carries at most
  8000) is stored in ``events`` and only its id is notified.
* Work wake-ups: after a write that makes jobs ready (enqueue, a finish that re-queues,
  replay) commits, a second statement notifies the work channel with ``"<earliest
  available_at> <model>"``, so an idle worker elsewhere wakes at once, or when a retry backoff
  ends. Not in the writing transaction on purpose: NOTIFY takes a database-wide lock at
  commit, held across that commit's WAL flush, which would serialise every enqueue; a
  transaction that only notifies writes no WAL and commits at once.
* A pooled connection the server closed while idle (a restart) is noticed by one ``poll()``
  before use and replaced, so the first call after the server is back already works.
* Slots are a plpgsql function under an advisory lock (one round trip). Rate-limit buckets run
  :func:`~genspool.backends.base.gcra` in Python and write with a compare-and-set, so the
  arithmetic lives in one place.

Limits: a schema name is ``[A-Za-z_][A-Za-z0-9_]*``, at most 50 characters (channel names
must fit PostgreSQL's 63). ``enqueue`` costs two round trips (insert, then the wake-up), as
does a ``finish`` that re-queues jobs. Startup ``options`` are not accepted by some poolers
(PgBouncer without ``ignore_startup_parameters``), and neither are prepared statements in its
transaction mode. Stored broadcasts are deleted by ``purge`` after ``EVENTS_KEEP_S``. Commits
wait for the WAL flush: ``options=-c synchronous_commit=off`` in the URL trades the last
moments before a server crash for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import select
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import AsyncConnection, Notify, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from genspool.backends._sql import (
    COLUMNS,
    dumps_or_none,
    job_to_row,
    load_queries,
    migrations,
    row_to_job,
)
from genspool.backends.base import Backend, JobFilter, gcra
from genspool.core.job import Job, JobStatus, Outcome
from genspool.exceptions import BackendError

__all__ = ["PostgresBackend"]

log = logging.getLogger("genspool.backends.postgres")

Q = {
    name: text.encode()
    for name, text in load_queries(
        "postgres",
        columns=COLUMNS,
        jcolumns=", ".join(f"j.{c}" for c in COLUMNS.split(", ")),
    ).items()
}

#: URL query parameters that are genspool's, not libpq's.
OWN_PARAMS = frozenset({"schema", "pool_min", "pool_max", "pool_timeout"})
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
#: Largest broadcast sent inside the NOTIFY itself (the server refuses payloads of 8000 bytes).
INLINE_MAX = 7000
#: How long a stored broadcast is kept for listeners to read it.
EVENTS_KEEP_S = 300.0
#: While the work channel is listened to, an idle worker still looks this often (a NOTIFY may
#: be lost while the listening connection is down and not yet known to be).
IDLE_POLL_S = 1.0
#: A listening connection that received nothing for this long is pinged.
PING_S = 10.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
_REQUEUED = frozenset({JobStatus.QUEUED.value, JobStatus.RETRYING.value})
_EXPIRED_ERROR = orjson.dumps({"code": "expired", "message": "not started before expires_at"})

Conn = AsyncConnection[TupleRow]


def _job_arrays(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """The columns of ``jobs`` as parallel arrays, the shape ``unnest`` takes apart."""
    return {
        "id": [j.id for j in jobs],
        "tenant": [j.tenant for j in jobs],
        "url": [j.url for j in jobs],
        "model": [j.model for j in jobs],
        "body": [orjson.dumps(j.body) for j in jobs],
        "priority": [j.priority for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "idempotency_key": [j.idempotency_key for j in jobs],
        "metadata": [dumps_or_none(j.metadata) if j.metadata else None for j in jobs],
        "expires_at": [j.expires_at for j in jobs],
        "created_at": [j.created_at for j in jobs],
        "available_at": [j.available_at or j.created_at for j in jobs],
        "rank": [j.rank for j in jobs],
    }


def mask(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def reason(exc: BaseException) -> str:
    """The driver's message on one line, without its hints."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return " ".join(lines[0].split()).removeprefix("connection failed: ")


async def _rows(conn: Conn, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    # Binary results: floats and bytea arrive as they are stored, with no text to parse.
    cur = await conn.execute(query, params, binary=True)
    return await cur.fetchall()


def _lost(conn: Conn) -> bool:
    """Whether the server dropped this idle pooled connection (a restart, an administrator).
    Between statements the server sends nothing unasked on it, so anything to read (a
    termination message, end of file) means it is gone: one poll, no round trip."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _inline(payload: bytes) -> str | None:
    """``payload`` as NOTIFY text, or None when it must go through the ``events`` table."""
    if len(payload) > INLINE_MAX:
        return None
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


class PostgresBackend(Backend):
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
        self.display = display or mask(conninfo)
        if not SCHEMA_NAME.fullmatch(schema):
            raise BackendError(
                f"{self.display}: schema {schema!r} must be letters, digits and _ (at most 50)"
            )
        if not 1 <= pool_min <= pool_max or pool_timeout <= 0:
            raise BackendError(
                f"{self.display}: need 1 <= pool_min <= pool_max and pool_timeout > 0"
            )
        self.schema = schema
        self._conninfo = conninfo
        self._kwargs = self._connect_kwargs(conninfo, schema)
        self._pool_size = (pool_min, pool_max)
        self._pool_timeout = pool_timeout
        self._events_channel = f"{schema}:events"
        self._work_channel = f"{schema}:work"
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._delivers: list[Callable[[bytes], None]] = []
        self._timers: list[asyncio.TimerHandle] = []

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        """``postgresql://user:pw@host:5432/db?schema=genspool&pool_min=1&pool_max=10``;
        ``pool_timeout`` (seconds) bounds the wait for a pooled connection. Other query
        parameters go to libpq as they are (``sslmode``, ``application_name``, ...)."""
        parts = urlsplit(url)
        display = mask(url)
        if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise BackendError(f"{display} is not a postgresql:// URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in OWN_PARAMS}
        rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMS], quote_via=quote)
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
        try:
            sizes = {k: int(own[k]) for k in ("pool_min", "pool_max") if k in own}
            timeout = float(own.get("pool_timeout", 5.0))
        except ValueError as exc:
            raise BackendError(
                f"{display}: pool_min, pool_max and pool_timeout are numbers"
            ) from exc
        return cls(
            conninfo,
            schema=own.get("schema") or "genspool",
            pool_timeout=timeout,
            display=display,
            **sizes,
        )

    @staticmethod
    def _connect_kwargs(conninfo: str, schema: str) -> dict[str, Any]:
        """Connection options added to the URL's: the search path, a connect timeout."""
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise BackendError(f"{mask(conninfo)} is not a valid URL: {reason(exc)}") from exc
        # Quoted, as every statement names the schema: a mixed-case name keeps its case.
        options = f'{given.get("options") or ""} -c search_path="{schema}"'.strip()
        kwargs: dict[str, Any] = {"options": options}
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = 5
        return kwargs

    # -- connections -------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._open()
        if not self._listening.is_set():  # so a broadcast sent right after connect() arrives
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), self._pool_timeout)

    async def _open(self) -> AsyncConnectionPool[Conn]:
        async with self._opening:
            if self._pool is not None:
                return self._pool
            # A direct connection first: it names the actual failure (refused, unknown database,
            # bad password) where a pool would only time out.
            try:
                async with (
                    await AsyncConnection.connect(
                        self._conninfo, autocommit=True, **self._kwargs
                    ) as conn,
                    conn.transaction(),
                ):
                    await self._migrate(conn, drop=False)
            except psycopg.Error as exc:
                raise BackendError(
                    f"cannot connect to PostgreSQL at {self.display}: {reason(exc)}"
                ) from exc
            min_size, max_size = self._pool_size
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                self._conninfo,
                kwargs={**self._kwargs, "autocommit": True},
                min_size=min_size,
                max_size=max_size,
                timeout=self._pool_timeout,
                open=False,
                name=f"genspool-{self.schema}",
            )
            try:
                await pool.open(wait=True, timeout=self._pool_timeout)
            except PoolTimeout as exc:
                await pool.close()
                raise BackendError(
                    f"cannot open a connection pool to PostgreSQL at {self.display}: "
                    f"no connection within {self._pool_timeout:g}s"
                ) from exc
            self._pool = pool
            self._start_listener()
            return pool

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        # asyncio primitives belong to the loop that first waited on them; a backend may be
        # connected again under another loop (the CLI checks the server, then serves).
        self._listening, self._opening = asyncio.Event(), asyncio.Lock()
        self._wakeups.clear()

    async def _migrate(self, conn: Conn, *, drop: bool) -> None:
        """Bring the schema to the latest version (after dropping it when ``drop``); runs
        inside the caller's transaction, under a lock that serialises migrating processes."""
        schema = sql.Identifier(self.schema)
        await conn.execute(Q["migration_lock"], {"schema": self.schema})
        if drop:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
        await conn.execute(Q["schema_version"])
        row = await (await conn.execute(Q["current_version"])).fetchone()
        current = row[0] if row else 0
        for version, text in migrations("postgres"):
            if version > current:
                await conn.execute(text.encode())
                await conn.execute(Q["record_version"], {"version": version, "now": time.time()})

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection; driver errors become one-line :class:`BackendError`."""
        pool = self._pool or await self._open()
        try:
            # A connection the server closed while it sat in the pool (a restart) is skipped
            # before any statement is sent on it, so the caller's call still runs, once.
            for _ in range(self._pool_size[1] + 1):
                async with pool.connection() as conn:
                    if _lost(conn):
                        await conn.close()  # so the pool replaces it
                        continue
                    yield conn
                    return
            raise psycopg.OperationalError("every pooled connection was closed by the server")
        except PoolTimeout as exc:
            raise BackendError(
                f"no connection to PostgreSQL at {self.display} within {self._pool_timeout:g}s"
            ) from exc
        except PoolClosed as exc:
            raise BackendError(f"the PostgreSQL backend for {self.display} is closed") from exc
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL error at {self.display}: {reason(exc)}") from exc

    async def _fetch(self, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            return await _rows(conn, query, params)

    async def _count(self, query: bytes, params: Mapping[str, Any]) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    async def _jobs(self, query: bytes, params: Mapping[str, Any]) -> list[Job]:
        return [row_to_job(r) for r in await self._fetch(query, params)]

    async def _job(self, query: bytes, params: Mapping[str, Any]) -> Job | None:
        jobs = await self._jobs(query, params)
        return jobs[0] if jobs else None

    async def destroy(self) -> None:
        async with self._conn() as conn, conn.transaction():
            await self._migrate(conn, drop=True)

    async def drop(self) -> None:
        async with self._conn() as conn:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(self.schema)
            ))  # fmt: skip

    # -- queue -------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        params = _job_arrays(jobs)
        async with self._conn() as conn:
            if all(j.idempotency_key is None for j in jobs):
                await conn.execute(Q["insert"], params)
                stored = new = list(jobs)
            else:
                rows = await _rows(conn, Q["insert_keyed"], params)
                new = [j for j, r in zip(jobs, rows, strict=True) if r[0]]
                stored = await self._resolve_keys(conn, jobs, rows)
            await self._wake_others(conn, [(j.model, j.available_at or j.created_at) for j in new])
        for model in {j.model for j in jobs}:
            self.notify(model)
        return stored

    @staticmethod
    async def _resolve_keys(
        conn: Conn, jobs: Sequence[Job], rows: list[tuple[Any, ...]]
    ) -> list[Job]:
        """Each input job, or the job that already held its idempotency key."""
        taken = {(j.tenant, j.idempotency_key): j for j, r in zip(jobs, rows, strict=True) if r[0]}
        out = []
        for job, row in zip(jobs, rows, strict=True):
            key = (job.tenant, job.idempotency_key)
            if row[0] or job.idempotency_key is None:
                out.append(job)
            elif row[1] is not None:  # stored before this batch
                out.append(row_to_job(row[1:]))
            elif key in taken:  # taken by an earlier job of this batch
                out.append(taken[key])
            else:  # committed by another process after this statement began
                params = {"tenant": job.tenant, "key": job.idempotency_key}
                found = await _rows(conn, Q["by_idempotency_key"], params)
                out.append(row_to_job(found[0]) if found else job)
        return out

    async def _wake_others(self, conn: Conn, ready: Sequence[tuple[str, float]]) -> None:
        """Tell other processes' idle workers that jobs of these models are ready (or will be at
        the given time). Sent after the write committed, so a woken worker finds the rows; best
        effort, since the write stands anyway and idle workers also poll."""
        earliest: dict[str, float] = {}
        for model, at in ready:
            earliest[model] = min(at, earliest.get(model, at))
        if not earliest:
            return
        payloads = [f"{at!r} {model}" for model, at in earliest.items()]
        try:
            await conn.execute(Q["wake"], {"work": self._work_channel, "payloads": payloads})
        except psycopg.Error as exc:
            log.warning("could not wake other workers on %s: %s", self.display, reason(exc))

    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        params = {
            "token": os.urandom(8).hex(),
            "until": now + lease_s,
            "now": now,
            "model": model,
            "limit": limit,
        }
        jobs = await self._jobs(Q["lease"], params)
        jobs.sort(key=lambda j: (-j.priority, j.rank, j.available_at))  # RETURNING: no order
        return jobs

    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        if not jobs:
            return 0
        params = {"id": [i for i, _ in jobs], "token": [t for _, t in jobs], "until": until}
        return await self._count(Q["extend"], params)

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        if not outcomes:
            return set()
        latest = list({o.job_id: o for o in outcomes}.values())  # one outcome per job: the last
        params = {
            "id": [o.job_id for o in latest],
            "token": [o.lease_token for o in latest],
            "status": [o.status.value for o in latest],
            "result": [dumps_or_none(o.result) for o in latest],
            "error": [dumps_or_none(o.error) for o in latest],
            "available_at": [o.available_at for o in latest],
            "now": now,
        }
        async with self._conn() as conn:
            rows = await _rows(conn, Q["finish"], params)
            await self._wake_others(conn, [(m, at) for _, m, st, at in rows if st in _REQUEUED])
        return {r[0] for r in rows}

    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        return await self._jobs(Q["expired_leases"], {"now": now, "limit": limit})

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        return await self._jobs(Q["get_many"], {"ids": list(job_ids)})

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

    async def cancel(self, job_id: str, now: float) -> Job | None:
        return await self._job(Q["cancel"], {"id": job_id, "now": now})

    async def replay(self, job_id: str, now: float) -> Job | None:
        async with self._conn() as conn:
            rows = await _rows(conn, Q["replay"], {"id": job_id, "now": now})
            if not rows:
                return None
            job = row_to_job(rows[0])
            await self._wake_others(conn, [(job.model, job.available_at)])
        return job

    async def expire(self, now: float) -> list[Job]:
        return await self._jobs(Q["expire"], {"now": now, "error": _EXPIRED_ERROR})

    async def purge(self, finished_before: float) -> int:
        params = {"before": finished_before, "events_before": time.time() - EVENTS_KEEP_S}
        return await self._count(Q["purge"], params)

    async def depth(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for model, status, count in await self._fetch(Q["depth"], {}):
            out.setdefault(model, {})[status] = count
        return out

    async def put(self, jobs: Sequence[Job]) -> None:
        """Store whole job records as they are (the store of a split deployment)."""
        if jobs:
            async with self._conn() as conn, conn.cursor() as cur:
                await cur.executemany(Q["put"], [job_to_row(j) for j in jobs])

    async def oldest_waiting(self) -> dict[str, float]:
        return {model: at for model, at in await self._fetch(Q["oldest_waiting"], {})}

    # -- coordination ------------------------------------------------------------------------

    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        params = {"name": name, "holder": holder, "limit": limit, "until": now + ttl_s, "now": now}
        rows = await self._fetch(Q["slot_acquire"], params)
        return bool(rows[0][0])

    async def release_slot(self, name: str, holder: str) -> None:
        await self._count(Q["slot_release"], {"name": name, "holder": holder})

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        async with self._conn() as conn:
            while True:
                row = await (
                    await conn.execute(Q["limit_get"], {"key": key}, binary=True)
                ).fetchone()
                old = None if row is None else row[0]
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

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._count(Q["kv_put"], {"namespace": namespace, "key": key, "value": value})

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        rows = await self._fetch(Q["kv_get"], {"namespace": namespace, "key": key})
        return bytes(rows[0][0]) if rows else None

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        rows = await self._fetch(Q["kv_list"], {"namespace": namespace})
        return {k: bytes(v) for k, v in rows}

    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self._count(Q["kv_delete"], {"namespace": namespace, "key": key}) > 0

    # -- events and wake-ups -----------------------------------------------------------------

    async def broadcast(self, payload: bytes) -> None:
        text = _inline(payload)
        if text is not None:
            await self._fetch(Q["notify"], {"channel": self._events_channel, "payload": "=" + text})
        else:
            params = {"channel": self._events_channel, "payload": payload, "now": time.time()}
            await self._fetch(Q["event_store"], params)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        self._delivers.append(deliver)
        try:
            self._start_listener()
            await asyncio.Future()  # until cancelled; the listener task does the work
        finally:
            self._delivers.remove(deliver)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        # With the work channel listened to, a NOTIFY ends the wait; the poll is a safety net.
        cap = IDLE_POLL_S if self._listening.is_set() else self.poll_interval_s
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, cap))
        event.clear()

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen_forever(), name="genspool-pg-listen")

    async def _listen_forever(self) -> None:
        """Hold one LISTEN connection for events and wake-ups; reconnect when it is lost."""
        backoff, failures = BACKOFF_MIN_S, 0
        while True:
            try:
                conn = await AsyncConnection.connect(
                    self._conninfo, autocommit=True, **self._kwargs
                )
                async with conn:
                    await self._listen_on(conn)
            except Exception as exc:  # the server went away, or a bug: keep listening anyway
                # One warning per outage, not one per attempt while the server is down.
                level = (
                    logging.WARNING if failures == 0 or self._listening.is_set() else logging.DEBUG
                )
                log.log(level, "LISTEN on %s failed: %s; reconnecting", self.display, reason(exc))
            if self._listening.is_set():  # it was up: start the backoff over
                backoff, failures = BACKOFF_MIN_S, 0
            self._listening.clear()
            failures += 1
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _listen_on(self, conn: Conn) -> None:
        channels = [sql.Identifier(self._events_channel), sql.Identifier(self._work_channel)]
        await conn.execute(sql.SQL("LISTEN {}; LISTEN {}").format(*channels))
        self._listening.set()
        log.debug("listening for events and work on %s", self.display)
        for event in self._wakeups.values():  # work may have come while nobody listened
            event.set()
        while True:
            async for note in conn.notifies(timeout=PING_S):
                await self._dispatch(note)
            await conn.execute("SELECT 1")  # quiet for a while: is the server still there?

    async def _dispatch(self, note: Notify) -> None:
        if note.channel == self._work_channel:
            self._wake(note.payload)
            return
        if note.payload.startswith("="):
            payload = note.payload[1:].encode()
        else:  # "#<id>": the payload was too large for NOTIFY and waits in the events table
            try:
                rows = await self._fetch(Q["event_get"], {"id": int(note.payload[1:])})
            except (BackendError, ValueError) as exc:
                log.warning("could not read broadcast %s: %s", note.payload, exc)
                return
            if not rows:
                return
            payload = bytes(rows[0][0])
        for deliver in list(self._delivers):
            try:
                deliver(payload)
            except Exception:
                log.exception("an event listener failed")

    def _wake(self, payload: str) -> None:
        """Wake the lanes of a model now, or when the earliest notified job becomes ready."""
        at, _, model = payload.partition(" ")
        try:
            delay = float(at) - time.time()
        except ValueError:
            delay = 0.0
        event = self._wakeups[model]
        if delay <= 0.0:
            event.set()
            return
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]
        self._timers.append(loop.call_later(delay, event.set))
