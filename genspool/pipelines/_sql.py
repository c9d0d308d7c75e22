"""The SQL source's readers, and what it shares with the table sink: reading URLs, connecting,
turning database values into JSON values.

``sqlite:///relative.db`` and ``sqlite:////abs/path.db`` as the SQLite backend reads them
(a relative path against the pipeline's base directory); ``postgresql://…`` for psycopg 3,
with an optional ``?schema=name`` (as genspool's own backend URLs have) that becomes the
connection's ``search_path``. psycopg is the ``postgres`` extra, imported only when used.

A source query runs read-only (SQLite's ``mode=ro``, a PostgreSQL read-only transaction): a
pipeline's source must not be able to change the data it reads. Rows come a chunk at a time,
from PostgreSQL through a named (server-side) cursor, so a large result is never held whole.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "SqlError",
    "jsonable",
    "postgres_connect",
    "postgres_rows",
    "sqlite_path",
    "sqlite_rows",
]

Rows = list[dict[str, Any]]


class SqlError(ValueError):
    """A database that cannot be reached or read, a failed query, or a missing driver."""


def sqlite_path(url: str, base: Path) -> Path:
    """The database file of a ``sqlite:///`` URL, relative paths against ``base``."""
    path = urlsplit(url).path
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise SqlError(f"{url!r} names no database file; use sqlite:///data.db")
    return base / path


async def postgres_connect(url: str, *, read_only: bool = False) -> psycopg.AsyncConnection[Any]:
    """A connection to ``url`` (its ``schema`` parameter as the search path)."""
    try:
        import psycopg
    except ImportError:
        raise SqlError(
            'PostgreSQL needs psycopg; install it with pip install "genspool[postgres]"'
        ) from None
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    schema = params.pop("schema", None)
    plain = urlunsplit(parts._replace(query=urlencode(params)))
    conn = await (
        psycopg.AsyncConnection.connect(plain, options=f"-c search_path={schema}")
        if schema
        else psycopg.AsyncConnection.connect(plain)
    )
    if read_only:
        await conn.set_read_only(True)
    return conn


def jsonable(value: Any) -> Any:
    """A database value as a JSON value: items are stored as JSON, and a ``Decimal`` or a
    ``bytes`` would not survive the round trip (numbers as floats, bytes as base64)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


async def sqlite_rows(path: Path, query: str, chunk: int) -> AsyncIterator[Rows]:
    """The rows of ``query`` on the database at ``path``, opened read-only."""
    db = await asyncio.to_thread(_sqlite_open, path)
    try:
        cursor = await asyncio.to_thread(_sqlite, db.execute, query)
        names = [d[0] for d in cursor.description or ()]
        while rows := await asyncio.to_thread(_sqlite, cursor.fetchmany, chunk):
            yield [dict(zip(names, row, strict=True)) for row in rows]
    finally:
        db.close()


def _sqlite_open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise SqlError(f"no SQLite database at {path}")
    try:
        return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SqlError(f"cannot open {path} ({exc})") from exc


def _sqlite(method: Any, *args: Any) -> Any:
    try:
        return method(*args)
    except sqlite3.Error as exc:
        raise SqlError(f"the query failed ({exc})") from exc


async def postgres_rows(url: str, query: str, chunk: int) -> AsyncIterator[Rows]:
    """The rows of ``query`` at ``url``, in a read-only transaction, via a server-side cursor."""
    try:
        conn = await postgres_connect(url, read_only=True)
    except SqlError:
        raise
    except Exception as exc:  # psycopg.Error, or an OSError from a bad host
        raise SqlError(f"cannot connect to PostgreSQL ({str(exc).strip()})") from exc
    import psycopg
    from psycopg.rows import dict_row

    try:
        named = conn.cursor(name="genspool_source", row_factory=dict_row)
        async with conn.transaction(), named as cursor:
            await cursor.execute(query)
            while rows := await cursor.fetchmany(chunk):
                yield rows
    except psycopg.Error as exc:
        raise SqlError(f"the query failed ({str(exc).strip()})") from exc
    finally:
        await conn.close()
