"""The bare SQLite claim loop: the embedded ceiling genspool is measured against.

stdlib ``sqlite3`` only, WAL. ``enqueue --jobs N`` inserts N jobs in one transaction and
prints ``{"n": N, "seconds": S}``. ``worker`` claims 100 jobs at a time with
``UPDATE … RETURNING``, writes their results and commits (one transaction per batch) until no job
is left, then prints the times (epoch seconds) of its first and last commit. ``--synchronous``
sets ``PRAGMA synchronous`` for both (FULL or NORMAL). The harness runs each in its own process.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

BATCH = 100
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'queued',
    payload TEXT NOT NULL,
    result TEXT,
    claimed_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE state = 'queued';
"""
CLAIM = """
UPDATE jobs SET state = 'running', claimed_at = ?
WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT ?)
RETURNING id, payload
"""
FINISH = "UPDATE jobs SET state = 'done', result = ?, finished_at = ? WHERE id = ?"


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """Open the database in autocommit mode (explicit BEGIN/COMMIT), WAL, given sync level."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def enqueue(conn: sqlite3.Connection, n: int) -> float:
    """Insert ``n`` jobs in one transaction; return the seconds it took."""
    conn.executescript(SCHEMA)
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO jobs (payload) VALUES (?)", ((json.dumps({"i": i}),) for i in range(n))
    )
    conn.execute("COMMIT")
    return time.perf_counter() - start


def work_batch(conn: sqlite3.Connection) -> int:
    """Claim up to BATCH jobs, store their results (the payload echoed back), commit."""
    conn.execute("BEGIN IMMEDIATE")
    claimed = conn.execute(CLAIM, (time.time(), BATCH)).fetchall()
    now = time.time()
    conn.executemany(FINISH, [(payload, now, job_id) for job_id, payload in claimed])
    conn.execute("COMMIT")
    return len(claimed)


def work(conn: sqlite3.Connection, timeout: float) -> dict[str, float | int | None]:
    """Run batches until the queue is empty (or ``timeout`` passes); report commit times."""
    done, first_seen, first_done, last_seen = 0, None, 0, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = work_batch(conn)
        if not got:
            break
        done += got
        last_seen = time.time()
        if first_seen is None:
            first_seen, first_done = last_seen, done
    return {
        "done": done,
        "first_seen": first_seen,
        "first_seen_done": first_done,
        "last_seen": last_seen,
        "timed_out": time.monotonic() >= deadline,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["enqueue", "worker"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    conn = connect(args.db, args.synchronous)
    if args.command == "enqueue":
        report: dict[str, object] = {"n": args.jobs, "seconds": enqueue(conn, args.jobs)}
    else:
        report = dict(work(conn, args.timeout))
    conn.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
