"""huey 3 peer: ``SqliteHuey`` (WAL; SQLite's default ``synchronous=FULL``), one no-op task.

Worker (started by the harness, from this folder)::

    huey_consumer huey_app.huey -w 4 -k thread -q

``python huey_app.py enqueue|wait --jobs N`` is the producer and the result monitor
(see ``_common.py``). The SQLite file is named by ``BENCH_DB``, a fresh one per run.
"""

from __future__ import annotations

import sqlite3
import time

from _common import emit_enqueue, parse_args, sqlite_db_path, wait_loop
from huey import SqliteHuey

huey = SqliteHuey("bench", filename=sqlite_db_path())


@huey.task()
def noop(i: int) -> int:
    """The no-op job: its result is its argument (huey stores no ``None`` results)."""
    return i


def enqueue(n: int) -> None:
    """Enqueue ``n`` jobs (huey commits each one), timing the loop alone."""
    start = time.perf_counter()
    for i in range(n):
        noop(i)
    emit_enqueue(n, time.perf_counter() - start)


def result_counter() -> sqlite3.Connection:
    """A read-only connection to the result table."""
    return sqlite3.connect(f"file:{sqlite_db_path()}?mode=ro", uri=True, timeout=5)


def main() -> None:
    args = parse_args()
    if args.command == "enqueue":
        enqueue(args.jobs)
        return
    conn = result_counter()

    def count() -> int:
        row = conn.execute("SELECT count(*) FROM kv WHERE queue = 'bench'").fetchone()
        return int(row[0])

    wait_loop(count, args.jobs, args.ready, args.timeout)


if __name__ == "__main__":
    # Run under the import name, so that task names ("huey_app.noop") match the consumer's.
    import huey_app

    huey_app.main()
