"""The SQLite connection's one-thread-at-a-time rule when a caller stops waiting.

A call handed to the connection's thread goes on there when its caller is cancelled (a call
timeout cancels it); the next call must still wait for it, not run inline beside it on the
loop's thread: SQLite answers two threads in one connection with "bad parameter or other API
misuse" (seen in ingest's chunks_put under load)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from genspool.backends.sqlite._conn import Connection


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
