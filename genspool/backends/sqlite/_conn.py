"""The connections of the SQLite backend: each owned by one thread, and the schema's migrations.

A :class:`Connection` runs plain functions on its own thread, so an operation costs one hop
between the event loop and that thread however many rows it touches; a function that fails
inside a transaction leaves it rolled back. Driver errors pass through unchanged: the backend's
public methods translate them once (:mod:`genspool.backends._errors`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from genspool.backends._sql import migrations

__all__ = ["Connection", "migrate", "write"]

T = TypeVar("T")


class Connection:
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
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

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
