"""The table sink's writer: rows upserted by key into SQLite (stdlib sqlite3) or PostgreSQL
(psycopg 3).

The table is created if absent, every column TEXT and the key column its primary key; each
chunk of items is one transaction of ``INSERT … ON CONFLICT (key) DO UPDATE``, so a chunk
written again after a crash (a finalize done twice) changes nothing. Identifiers were checked
by :class:`~genspool.pipelines.sinks.TableSink` and are quoted here as well.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from genspool.pipelines._sql import SqlError, postgres_connect, sqlite_path
from genspool.pipelines._writers import SinkError, SinkOutput, SinkWriter, cell, render_fields

__all__ = ["TableWriter"]

Row = list[str | None]


class TableSpec(Protocol):
    """What the writer reads of a :class:`~genspool.pipelines.sinks.TableSink`."""

    table: str
    url: str
    columns: dict[str, str]
    key: str


class _Table(Protocol):
    async def upsert(self, rows: Sequence[Row]) -> None: ...
    async def close(self) -> None: ...


class TableWriter(SinkWriter):
    """Upserts each chunk; opens the database (and creates the table) on the first chunk, or
    at close for a run with no items, so an empty run still leaves its table."""

    def __init__(self, sink: TableSpec, base: Path) -> None:
        self._sink, self._base = sink, base
        self._columns = [sink.key, *(c for c in sink.columns if c != sink.key)]
        self._db: _Table | None = None

    async def write(self, items: Sequence[dict[str, Any]]) -> None:
        rows = [self._row(item) for item in items]
        if rows:
            db = await self._open()
            await db.upsert(rows)
            self.rows += len(rows)

    async def close(self) -> SinkOutput:
        db = await self._open()
        await db.close()
        return SinkOutput(None, self._sink.table, None, self.rows)

    def _row(self, item: dict[str, Any]) -> Row:
        values = render_fields(self._sink.columns, item)
        key = values.pop(self._sink.key) if self._sink.key in values else item.get("key")
        if key is None:
            raise SinkError(f"table {self._sink.table}: an item has no {self._sink.key!r}")
        return [cell(key), *(cell(values[c]) for c in self._columns[1:])]

    async def _open(self) -> _Table:
        if self._db is None:
            sql = _Statements(self._sink.table, self._columns)
            url = self._sink.url
            try:
                if url.startswith("postgres"):
                    self._db = await _PostgresTable.open(url, sql)
                else:
                    self._db = await _SQLiteTable.open(sqlite_path(url, self._base), sql)
            except SqlError as exc:
                raise SinkError(f"table {self._sink.table}: {exc}") from None
        return self._db


class _Statements:
    """The CREATE and the upsert, for ``?`` (sqlite3) or ``%s`` (psycopg) placeholders."""

    def __init__(self, table: str, columns: list[str]) -> None:
        self.table = table
        name = ".".join(f'"{part}"' for part in table.split("."))
        cols = [f'"{c}"' for c in columns]
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {name} ("
            + ", ".join([f"{cols[0]} TEXT PRIMARY KEY", *(f"{c} TEXT" for c in cols[1:])])
            + ")"
        )
        update = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        self._insert = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({{}}) ON CONFLICT"
        self._tail = f" ({cols[0]}) {action}"
        self._width = len(cols)

    def upsert(self, placeholder: str) -> str:
        return self._insert.format(", ".join([placeholder] * self._width)) + self._tail


class _SQLiteTable:
    def __init__(self, db: sqlite3.Connection, sql: _Statements) -> None:
        self._db, self._sql = db, sql
        self._upsert = sql.upsert("?")

    @classmethod
    async def open(cls, path: Path, sql: _Statements) -> _SQLiteTable:
        def connect() -> sqlite3.Connection:
            if not path.parent.is_dir():
                raise SinkError(f"table {sql.table}: no directory {path.parent} for {path.name}")
            db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
            try:
                with db:
                    db.execute(sql.create)
            except sqlite3.Error:
                db.close()
                raise
            return db

        try:
            return cls(await asyncio.to_thread(connect), sql)
        except sqlite3.Error as exc:
            raise SinkError(f"table {sql.table} in {path}: {exc}") from exc

    async def upsert(self, rows: Sequence[Row]) -> None:
        def run() -> None:
            with self._db:  # one transaction per chunk
                self._db.executemany(self._upsert, rows)

        try:
            await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise SinkError(f"table {self._sql.table}: {exc}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)


class _PostgresTable:
    def __init__(self, conn: Any, sql: _Statements) -> None:
        self._conn, self._sql = conn, sql
        self._upsert = sql.upsert("%s")

    @classmethod
    async def open(cls, url: str, sql: _Statements) -> _PostgresTable:
        try:
            conn = await postgres_connect(url)
        except SqlError:
            raise
        except Exception as exc:  # psycopg.Error, or an OSError from a bad host
            raise SinkError(f"table {sql.table}: cannot connect ({str(exc).strip()})") from exc
        table = cls(conn, sql)
        await table._run(lambda cur: cur.execute(sql.create))
        return table

    async def upsert(self, rows: Sequence[Row]) -> None:
        await self._run(lambda cur: cur.executemany(self._upsert, rows))

    async def _run(self, step: Any) -> None:
        import psycopg

        try:
            async with self._conn.transaction(), self._conn.cursor() as cur:
                await step(cur)
        except psycopg.Error as exc:
            raise SinkError(f"table {self._sql.table}: {str(exc).strip()}") from exc

    async def close(self) -> None:
        await self._conn.close()
