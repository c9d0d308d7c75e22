"""The embedded backend: queue and store in one SQLite file (WAL).

Each operation is one transaction run as a plain function on a dedicated thread that owns the
connection, so an operation costs one hop between the event loop and that thread however many
rows it touches. Reads go through a second connection on a second thread and never wait behind
writes (WAL lets them read a snapshot). Several processes may share the file: ``BEGIN
IMMEDIATE`` plus a busy timeout serialises their writers.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson

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

__all__ = ["SQLiteBackend"]

T = TypeVar("T")

Q = load_queries("sqlite", columns=COLUMNS)


def _finish_row(o: Outcome, now: float) -> dict[str, Any]:
    return {
        "status": o.status.value,
        "result": dumps_or_none(o.result),
        "error": dumps_or_none(o.error),
        "available_at": o.available_at,
        "now": now,
        "id": o.job_id,
    }


class _Conn:
    """One sqlite3 connection used only from its own thread."""

    def __init__(self, path: str, synchronous: str, name: str) -> None:
        self._path, self._sync, self._name = path, synchronous, name
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self._sync}")
        return db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"genspool-sqlite-{self._name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = self._open()
        try:
            return fn(self._db)
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise BackendError(f"SQLite error on {self._path}: {exc}") from exc

    async def close(self) -> None:
        def _close(_: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self.run(_close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _write(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""

    def tx(db: sqlite3.Connection) -> T:
        db.execute("BEGIN IMMEDIATE")
        out = fn(db)
        db.execute("COMMIT")
        return out

    return tx


class SQLiteBackend(Backend):
    def __init__(
        self, path: str | os.PathLike[str] = "genspool.db", *, synchronous: str = "NORMAL"
    ) -> None:
        super().__init__()
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise BackendError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.path = str(path)
        self._w = _Conn(self.path, synchronous.upper(), "w")
        self._r = _Conn(self.path, synchronous.upper(), "r")

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db``; ``?synchronous=FULL``."""
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise BackendError(f"{url!r} names no database file; use sqlite:///genspool.db")
        sync = parse_qs(parts.query).get("synchronous", ["NORMAL"])[0]
        return cls(path, synchronous=sync)

    async def connect(self) -> None:
        parent = Path(self.path).parent
        if not parent.exists():
            raise BackendError(f"cannot create {self.path}: directory {parent} does not exist")
        await self._w.run(self._migrate)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        current = db.execute("PRAGMA user_version").fetchone()[0]
        for version, sql in migrations("sqlite"):
            if version > current:
                for stmt in filter(str.strip, sql.split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")

    async def close(self) -> None:
        await self._w.close()
        await self._r.close()

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        rows = [
            (
                j.id,
                j.tenant,
                j.url,
                j.model,
                orjson.dumps(j.body),
                j.priority,
                j.max_attempts,
                j.idempotency_key,
                dumps_or_none(j.metadata) if j.metadata else None,
                j.expires_at,
                j.created_at,
                j.available_at or j.created_at,
                j.rank,
            )
            for j in jobs
        ]

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

        stored = await self._w.run(_write(insert))
        for model in {j.model for j in jobs}:
            self.notify(model)
        return stored

    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        args = {
            "token": os.urandom(8).hex(),
            "until": now + lease_s,
            "now": now,
            "model": model,
            "limit": limit,
        }

        def lease(db: sqlite3.Connection) -> list[Job]:
            jobs = [row_to_job(r) for r in db.execute(Q["lease"], args).fetchall()]
            jobs.sort(key=lambda j: (-j.priority, j.rank, j.available_at))  # RETURNING: no order
            return jobs

        return await self._w.run(_write(lease))

    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        def extend(db: sqlite3.Connection) -> int:
            return db.executemany(Q["extend"], [(until, i, t) for i, t in jobs]).rowcount

        return await self._w.run(_write(extend))

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        tokens = {o.job_id: o.lease_token for o in outcomes}
        held_sql = Q["held"].replace("{ids}", ",".join("?" * len(tokens)))

        def finish(db: sqlite3.Connection) -> set[str]:
            # Fencing: only outcomes whose lease is still held are applied, checked and written
            # in one transaction, so a worker that lost its lease changes nothing.
            held = {i for i, t in db.execute(held_sql, tuple(tokens)) if tokens[i] == t}
            applied = [o for o in outcomes if o.job_id in held]
            # Successes, the bulk of the traffic, take a plain statement with positional
            # parameters: about half the cost per row of the general one.
            ok = [o for o in applied if o.status is JobStatus.SUCCEEDED]
            db.executemany(Q["succeed"], [(orjson.dumps(o.result), now, o.job_id) for o in ok])
            rest = [_finish_row(o, now) for o in applied if o.status is not JobStatus.SUCCEEDED]
            db.executemany(Q["finish"], rest)
            return held

        return await self._w.run(_write(finish))

    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        return await self._select(Q["expired_leases"], (now, limit))

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        return await self._select(
            f"SELECT {COLUMNS} FROM jobs WHERE id IN ({marks})", tuple(job_ids)
        )

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

    async def cancel(self, job_id: str, now: float) -> Job | None:
        return await self._write_one(Q["cancel"], (now, job_id))

    async def replay(self, job_id: str, now: float) -> Job | None:
        return await self._write_one(Q["replay"], (now, job_id))

    async def expire(self, now: float) -> list[Job]:
        def expire(db: sqlite3.Connection) -> list[Job]:
            return [row_to_job(r) for r in db.execute(Q["expire"], {"now": now}).fetchall()]

        return await self._w.run(_write(expire))

    async def purge(self, finished_before: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            return db.execute(Q["purge"], (finished_before,)).rowcount

        return await self._w.run(_write(purge))

    async def depth(self) -> dict[str, dict[str, int]]:
        def depth(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for model, status, count in db.execute(Q["depth"]):
                out.setdefault(model, {})[status] = count
            return out

        return await self._r.run(depth)

    async def destroy(self) -> None:
        def drop(db: sqlite3.Connection) -> None:
            for table in ("jobs", "slots", "limits", "kv"):
                db.execute(f"DELETE FROM {table}")

        await self._w.run(_write(drop))

    async def put(self, jobs: Sequence[Job]) -> None:
        """Store whole job records as they are (the store of a split deployment)."""
        rows = [job_to_row(j) for j in jobs]
        await self._w.run(_write(lambda db: db.executemany(Q["put"], rows)))

    async def oldest_waiting(self) -> dict[str, float]:
        return await self._r.run(lambda db: dict(db.execute(Q["oldest_waiting"]).fetchall()))

    # -- coordination ------------------------------------------------------------------------

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

        return await self._w.run(_write(take))

    async def release_slot(self, name: str, holder: str) -> None:
        await self._w.run(_write(lambda db: db.execute(Q["slot_release"], (name, holder))))

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        def take(db: sqlite3.Connection) -> float:
            row = db.execute(Q["limit_get"], (key,)).fetchone()
            tat, wait = gcra(row[0] if row else None, now, cost, rate_per_s, burst)
            if wait == 0.0:
                db.execute(Q["limit_set"], (key, tat))
            return wait

        return await self._w.run(_write(take))

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._w.run(_write(lambda db: db.execute(Q["kv_put"], (namespace, key, value))))

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        row = await self._r.run(lambda db: db.execute(Q["kv_get"], (namespace, key)).fetchone())
        return None if row is None else bytes(row[0])

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        rows = await self._r.run(lambda db: db.execute(Q["kv_list"], (namespace,)).fetchall())
        return {k: bytes(v) for k, v in rows}

    async def kv_delete(self, namespace: str, key: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute(Q["kv_delete"], (namespace, key)).rowcount > 0

        return await self._w.run(_write(delete))

    async def _select(self, sql: str, args: Sequence[Any]) -> list[Job]:
        return await self._r.run(lambda db: [row_to_job(r) for r in db.execute(sql, args)])

    async def _write_one(self, sql: str, args: Sequence[Any]) -> Job | None:
        def one(db: sqlite3.Connection) -> Job | None:
            row = db.execute(sql, args).fetchone()
            return None if row is None else row_to_job(row)

        return await self._w.run(_write(one))
