"""The connections of the PostgreSQL backend: its URL, its pool, its schema's migrations.

:class:`Connections` opens the pool (after bringing the schema to the latest version over one
direct connection, which names the actual failure where a pool would only time out) and hands
out pooled connections that are known to be alive. Driver errors pass through unchanged: the
backend's public methods translate them once (:mod:`genspool.backends._errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from genspool.backends._errors import describe
from genspool.backends._sql import COLUMNS, load_queries, migrations
from genspool.exceptions import BackendError

__all__ = ["Conn", "Connections", "Q", "Settings", "rows"]

Conn = AsyncConnection[TupleRow]

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


@dataclass(frozen=True, slots=True)
class Settings:
    """What a ``postgresql://`` URL says: libpq's part, and genspool's own parameters."""

    conninfo: str
    schema: str = "genspool"
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str, shown: str) -> Settings:
        """``postgresql://user:pw@host:5432/db?schema=genspool&pool_min=1&pool_max=10``;
        ``pool_timeout`` (seconds) bounds the wait for a pooled connection. Other query
        parameters go to libpq as they are (``sslmode``, ``application_name``, ...)."""
        parts = urlsplit(url)
        if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise BackendError(f"{shown} is not a postgresql:// URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in OWN_PARAMS}
        rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMS], quote_via=quote)
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
        try:
            sizes = {k: int(own[k]) for k in ("pool_min", "pool_max") if k in own}
            timeout = float(own.get("pool_timeout", 5.0))
        except ValueError as exc:
            raise BackendError(f"{shown}: pool_min, pool_max and pool_timeout are numbers") from exc
        return cls(conninfo, own.get("schema") or "genspool", pool_timeout=timeout, **sizes)

    def check(self, shown: str) -> None:
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise BackendError(
                f"{shown}: schema {self.schema!r} must be letters, digits and _ (at most 50)"
            )
        if not 1 <= self.pool_min <= self.pool_max or self.pool_timeout <= 0:
            raise BackendError(f"{shown}: need 1 <= pool_min <= pool_max and pool_timeout > 0")

    def connect_kwargs(self, shown: str) -> dict[str, Any]:
        """Connection options added to the URL's: the search path, a connect timeout."""
        try:
            given = conninfo_to_dict(self.conninfo)
        except psycopg.ProgrammingError as exc:
            raise BackendError(f"{shown} is not a valid URL: {describe(exc)}") from exc
        # Quoted, as every statement names the schema: a mixed-case name keeps its case.
        options = f'{given.get("options") or ""} -c search_path="{self.schema}"'.strip()
        kwargs: dict[str, Any] = {"options": options}
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = 5
        return kwargs


async def rows(
    conn: Conn,
    query: bytes,
    params: Mapping[str, Any] | Sequence[Any],
    *,
    prepare: bool | None = None,
) -> list[tuple[Any, ...]]:
    # Binary results: floats and bytea arrive as they are stored, with no text to parse.
    cur = await conn.execute(query, params, binary=True, prepare=prepare)
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


class Connections:
    """The pool of one schema, opened on first use."""

    def __init__(self, settings: Settings, shown: str) -> None:
        settings.check(shown)
        self.settings = settings
        self.shown = shown
        self.kwargs = settings.connect_kwargs(shown)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening = asyncio.Lock()

    @property
    def schema(self) -> str:
        return self.settings.schema

    async def direct(self) -> Conn:
        """A connection of its own, outside the pool (the listener's)."""
        return await AsyncConnection.connect(self.settings.conninfo, autocommit=True, **self.kwargs)

    async def open(self) -> AsyncConnectionPool[Conn]:
        async with self._opening:
            if self._pool is None:
                async with await self.direct() as conn, conn.transaction():
                    await self.migrate(conn, drop=False)
                self._pool = await self._new_pool()
            return self._pool

    async def _new_pool(self) -> AsyncConnectionPool[Conn]:
        s = self.settings
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            s.conninfo,
            kwargs={**self.kwargs, "autocommit": True},
            min_size=s.pool_min,
            max_size=s.pool_max,
            timeout=s.pool_timeout,
            open=False,
            name=f"genspool-{s.schema}",
        )
        try:
            await pool.open(wait=True, timeout=s.pool_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise BackendError(
                f"cannot open a connection pool to PostgreSQL at {self.shown}: "
                f"no connection within {s.pool_timeout:g}s"
            ) from exc
        return pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        # asyncio primitives belong to the loop that first waited on them; a backend may be
        # connected again under another loop (the CLI checks the server, then serves).
        self._opening = asyncio.Lock()

    async def migrate(self, conn: Conn, *, drop: bool) -> None:
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
    async def conn(self) -> AsyncIterator[Conn]:
        """A pooled connection that is still connected."""
        pool = self._pool or await self.open()
        # A connection the server closed while it sat in the pool (a restart) is skipped
        # before any statement is sent on it, so the caller's call still runs, once.
        for _ in range(self.settings.pool_max + 1):
            async with pool.connection() as conn:
                if _lost(conn):
                    await conn.close()  # so the pool replaces it
                    continue
                yield conn
                return
        raise psycopg.OperationalError("every pooled connection was closed by the server")

    async def fetch(
        self,
        query: bytes,
        params: Mapping[str, Any] | Sequence[Any],
        *,
        prepare: bool | None = None,
    ) -> list[tuple[Any, ...]]:
        async with self.conn() as conn:
            return await rows(conn, query, params, prepare=prepare)

    async def count(self, query: bytes, params: Mapping[str, Any] | Sequence[Any]) -> int:
        """How many rows ``query`` wrote."""
        async with self.conn() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount
