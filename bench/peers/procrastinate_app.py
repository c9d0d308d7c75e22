"""Procrastinate 3 peer (PostgreSQL), tuned per PEERS.md: concurrency 10, a pool of 10.

Procrastinate stores no results: a finished job is a row of ``procrastinate_jobs`` whose status
is ``succeeded``, which is what the monitor counts. Every run gets a database of its own,
named by ``BENCH_PG_DB`` on the server of ``BENCH_PG_URL`` (default the loopback server):

* ``setup`` creates the database and applies procrastinate's schema; ``teardown`` drops it;
* ``enqueue --jobs N`` defers N jobs with ``batch_defer_async`` in batches of 1000 (its fastest
  way in) and prints ``{"n": N, "seconds": S}``, the loop alone;
* ``wait --jobs N --ready FILE`` is the monitor (see ``_common.py``);
* ``worker`` runs one worker process (``app.run_worker_async``, concurrency 10, LISTEN/NOTIFY
  on, as by default), logging at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import procrastinate
import psycopg
from _common import emit, emit_enqueue, parse_args, wait_loop

SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DATABASE = os.environ.get("BENCH_PG_DB", "bench_procrastinate")
CONCURRENCY = 10
POOL = 10
BATCH = 1000


def dsn(database: str) -> str:
    """The server's URL with its database replaced."""
    return SERVER.rsplit("/", 1)[0] + "/" + database


app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=dsn(DATABASE), min_size=1, max_size=POOL)
)


@app.task(name="noop")
async def noop(i: int) -> int:
    """The no-op job (its return value is not stored: procrastinate has no result store)."""
    return i


def admin(statement: str) -> None:
    """Run one statement outside a transaction on the server's own database."""
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


async def apply_schema() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue(n: int) -> None:
    """Defer ``n`` jobs in batches, timing the loop alone."""
    async with app.open_async():
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            await noop.batch_defer_async(*({"i": j} for j in range(i, min(i + BATCH, n))))
        emit_enqueue(n, time.perf_counter() - start)


async def work() -> None:
    async with app.open_async():
        await app.run_worker_async(concurrency=CONCURRENCY)


def main() -> None:
    args = parse_args(extra=["setup", "teardown", "worker"])
    logging.basicConfig(level=logging.WARNING)
    if args.command == "setup":
        admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{DATABASE}"')
        asyncio.run(apply_schema())
        emit({"database": DATABASE})
    elif args.command == "teardown":
        admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        emit({"dropped": DATABASE})
    elif args.command == "enqueue":
        asyncio.run(enqueue(args.jobs))
    elif args.command == "worker":
        asyncio.run(work())
    else:
        conn = psycopg.connect(dsn(DATABASE), autocommit=True)
        query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

        def count() -> int:
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

        wait_loop(count, args.jobs, args.ready, args.timeout)


if __name__ == "__main__":
    # Run under the import name, so that the app is not the __main__ module's (which
    # procrastinate warns about) and task lookups match the worker's.
    import procrastinate_app

    procrastinate_app.main()
