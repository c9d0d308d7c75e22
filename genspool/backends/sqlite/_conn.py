"""The connections of the SQLite backend: each owned by one thread, and the schema's migrations.

A :class:`Connection` runs plain functions, so an operation costs one call however many rows it
touches; a function that fails inside a transaction leaves it rolled back. A short operation
runs on the event loop's own thread when nothing else is queued on the connection and SQLite
can start it at once (a commit in WAL mode with ``synchronous=NORMAL`` takes tens of
microseconds, less than a hop to another thread, which also waits for the GIL while the loop is
busy: up to 5 ms each way). When the database is locked by another connection the operation
moves to the connection's own thread, which waits for the lock (``busy_timeout``) without
blocking the loop; long operations (migrations, purges, counts) always run there. Driver errors
pass through unchanged: the backend's public methods translate them once
(:mod:`genspool.backends._errors`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

from genspool.backends._sql import migrations

__all__ = ["Connection", "migrate", "write"]

T = TypeVar("T")
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


#: How long an operation on the connection's thread waits for another connection's lock.
BUSY_TIMEOUT_MS = 30_000


class Connection:
    """One sqlite3 connection, used by one thread at a time: the event loop's, or its own."""

    def __init__(self, path: str, synchronous: str, name: str) -> None:
        self._path, self._sync, self._name = path, synchronous, name
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._queued = 0  # operations handed to the thread and not finished

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 0")  # inline attempts never wait; the thread does
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self._sync}")
        return db

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = True) -> T:
        """``fn(connection)``: on the loop's thread if ``inline`` and SQLite can run it now,
        else on the connection's thread, after what is queued there."""
        if inline and not self._queued:
            try:
                return self._call(fn)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in _BUSY:  # BUSY_SNAPSHOT and kin too
                    raise
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"genspool-sqlite-{self._name}")
        loop = asyncio.get_running_loop()
        self._queued += 1
        work = self._pool.submit(self._waiting, fn)
        # Counted down when the thread is done with the connection, not when the caller stops
        # waiting: a caller cancelled (a call timeout) leaves ``fn`` running on the thread, and
        # an inline call beside it would use the connection from two threads at once (SQLite:
        # "bad parameter or other API misuse").
        work.add_done_callback(lambda _: self._finished(loop))
        return await asyncio.wrap_future(work)

    def _finished(self, loop: asyncio.AbstractEventLoop) -> None:
        def done() -> None:
            self._queued -= 1

        try:
            loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed: no call comes after
            self._queued -= 1

    def _waiting(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the connection's thread, waiting for other connections' locks."""
        db = self._connected()
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return self._call(fn)
        finally:
            if self._db is db:  # not closed by fn
                db.execute("PRAGMA busy_timeout = 0")

    def _connected(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._connected()
        try:
            out = fn(db)
            if isinstance(out, sqlite3.Cursor):
                # Closed here, on the thread that used it. Returned to the loop's thread and
                # freed there, a cursor resets its cached statement while the connection's
                # thread may be running that statement again (an executemany of the next
                # call): SQLite answers "bad parameter or other API misuse".
                out.close()
                return cast(T, None)
            return out
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        def _close(_: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self.run(_close, inline=False)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def write(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""

    def tx(db: sqlite3.Connection) -> T:
        db.execute("BEGIN IMMEDIATE")
        out = fn(db)
        db.execute("COMMIT")
        return out

    return tx


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file's schema to the newest numbered migration (``PRAGMA user_version``)."""
    db.execute("BEGIN IMMEDIATE")
    current = db.execute("PRAGMA user_version").fetchone()[0]
    for version, sql in migrations("sqlite"):
        if version > current:
            for stmt in filter(str.strip, sql.split(";")):
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {version}")
    db.execute("COMMIT")
