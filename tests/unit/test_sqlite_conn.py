"""The SQLite connection's one-thread-at-a-time rule when a caller stops waiting.

A call handed to the connection's thread goes on there when its caller is cancelled (a call
timeout cancels it); the next call must still wait for it, not run inline beside it on the
loop's thread: SQLite answers two threads in one connection with "bad parameter or other API
misuse" (seen in ingest's chunks_put under load)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

from genspool.backends.sqlite._conn import Connection, write


async def test_a_cancelled_caller_does_not_free_the_connection_for_an_inline_call(
    tmp_path: Path,
) -> None:
    conn = Connection(str(tmp_path / "c.db"), "NORMAL", "t")
    events: list[str] = []

    def slow(db: sqlite3.Connection) -> None:
        events.append(f"slow starts on {threading.current_thread().name}")
        time.sleep(0.3)  # the connection is in use on its thread
        db.execute("SELECT 1")
        events.append("slow ends")

    def quick(db: sqlite3.Connection) -> int:
        events.append("quick")
        return int(db.execute("SELECT 2").fetchone()[0])

    try:
        waiting = asyncio.create_task(conn.run(slow, inline=False))
        await asyncio.sleep(0.05)
        waiting.cancel()  # the caller gives up; the thread goes on
        await asyncio.gather(waiting, return_exceptions=True)
        assert await conn.run(quick) == 2
        assert events[0].startswith("slow starts on genspool-sqlite-t")
        assert events[1:] == ["slow ends", "quick"]  # after, not beside
    finally:
        await conn.close()


async def test_writes_handed_to_the_thread_back_to_back_never_misuse_the_connection(
    tmp_path: Path,
) -> None:
    """An executemany's cursor, returned to the loop's thread and freed there, reset the
    cached statement while the connection's thread ran the next executemany of it: SQLite's
    "bad parameter or other API misuse" (a quarter of the puts failed here before the fix,
    and an ingest under load lost files to it)."""

    conn = Connection(str(tmp_path / "m.db"), "NORMAL", "w")
    await conn.run(
        lambda db: db.execute("CREATE TABLE t (a text, b int, v blob, PRIMARY KEY (a, b))")
    )
    failures: list[BaseException] = []

    async def writer(w: int) -> None:
        for it in range(200):
            rows = [(f"w{w}", it * 100 + s, os.urandom(1536)) for s in range(5 + (it * 7) % 50)]
            put = write(
                lambda db, rows=rows: db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
            )
            try:
                await conn.run(put, inline=False)
            except sqlite3.Error as exc:
                failures.append(exc)

    try:
        await asyncio.gather(*(writer(w) for w in range(4)))
        assert failures == []
        count = await conn.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0])
        assert count == 4 * sum(5 + (it * 7) % 50 for it in range(200))
    finally:
        await conn.close()
