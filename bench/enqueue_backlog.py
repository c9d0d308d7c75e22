"""Enqueue rate with a deep backlog: does submitting slow down when a million jobs wait?

For each backend (SQLite, PostgreSQL), in one namespace that stays empty and one filled with
``--backlog`` queued jobs (default 1,000,000), measure through the library:

* ``submit_many``: ``--batch-jobs`` jobs (default 20,000) in calls of 1,000;
* ``submit``: ``--single-jobs`` single calls (default 2,000), one job each;

alternating empty and backlog ``--runs`` times, and print the rates, their medians and the
backlog/empty ratio (target: at least 0.5). Job objects are built before the timed loops.
The backlog is put in fast, straight through ``backend.enqueue`` in batches of 10,000 with
increasing fair-share ranks (as ``Queue.submit_many`` would give one tenant); how long that took
is printed. Both namespaces are dropped at the end (a fresh PostgreSQL schema each, a SQLite
file in a temporary directory). SQLite runs at the library's default ``synchronous=NORMAL``
(WAL); PostgreSQL at the server's settings (printed).

Usage (the project's venv, which has genspool)::

    python bench/enqueue_backlog.py [--backlog 1000000] [--runs 3] [--backends sqlite,postgres]
        [--batch-jobs 20000] [--single-jobs 2000] [--quick]

Writes ``bench/results/enqueue_backlog.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genspool.backends import backend_from_url, open_storage
from genspool.core.job import Job
from genspool.core.queue import Queue

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "enqueue_backlog.json"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")
BODY = {"model": "echo", "messages": [{"role": "user", "content": "noop"}]}
FILL_BATCH = 10_000
SUBMIT_BATCH = 1_000
MODES = ("submit_many", "submit")


def new_jobs(n: int) -> list[Job]:
    return [Job(url="/v1/chat/completions", body=BODY, model="echo") for _ in range(n)]


def url_for(backend: str, tmp: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / name}.db"
    return f"{PG_SERVER}?schema=bench_{name}_{os.urandom(3).hex()}"


async def fill(url: str, n: int) -> float:
    """Put ``n`` queued jobs in straight through the backend; the seconds it took."""
    backend = backend_from_url(url)
    await backend.connect()
    start = time.perf_counter()
    try:
        for i in range(0, n, FILL_BATCH):
            jobs = new_jobs(min(FILL_BATCH, n - i))
            for rank, job in enumerate(jobs, start=i + 1):
                job.rank = float(rank)
            await backend.enqueue(jobs)
        return time.perf_counter() - start
    finally:
        await backend.close()


async def measure(url: str, mode: str, n: int) -> float:
    """Jobs/s of ``n`` jobs submitted through a fresh queue, in calls of 1,000 or one each."""
    async with Queue(open_storage(url)) as queue:
        jobs = new_jobs(n)
        start = time.perf_counter()
        if mode == "submit_many":
            for i in range(0, n, SUBMIT_BATCH):
                await queue.submit_many(jobs[i : i + SUBMIT_BATCH])
        else:
            for job in jobs:
                await queue.submit(job)
        return n / (time.perf_counter() - start)


async def depth(url: str) -> int:
    async with Queue(open_storage(url)) as queue:
        return sum(sum(per.values()) for per in (await queue.depth()).values())


async def drop(url: str) -> None:
    async with Queue(open_storage(url)) as queue:
        await queue.storage.drop()


async def pg_settings() -> str:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_SERVER) as conn:
        values = []
        for name in ("fsync", "synchronous_commit"):
            row = await (await conn.execute(f"SHOW {name}")).fetchone()
            values.append(f"{name}={row[0] if row else '?'}")
    return "PostgreSQL " + ", ".join(values)


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill one namespace, then alternate the measurements on the empty one and the full one."""
    sizes = {"submit_many": args.batch_jobs, "submit": args.single_jobs}
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        empty, full = url_for(backend, Path(tmp), "empty"), url_for(backend, Path(tmp), "full")
        durability = "SQLite NORMAL (WAL)" if backend == "sqlite" else await pg_settings()
        try:
            await depth(empty)  # creates the empty namespace
            print(f"{backend} ({durability}): filling a backlog of {args.backlog:,} jobs ...")
            sys.stdout.flush()
            fill_s = await fill(full, args.backlog)
            waiting = await depth(full)
            print(
                f"  backlog filled in {fill_s:.1f} s ({args.backlog / fill_s:,.0f} jobs/s "
                f"through backend.enqueue); {waiting:,} jobs waiting"
            )
            rates: dict[str, dict[str, list[float]]] = {
                m: {"empty": [], "backlog": []} for m in MODES
            }
            for run_no in range(1, args.runs + 1):
                for mode in MODES:
                    for phase, url in (("empty", empty), ("backlog", full)):
                        rate = await measure(url, mode, sizes[mode])
                        rates[mode][phase].append(rate)
                        print(
                            f"  run {run_no} {mode:<11} {phase:<7} {sizes[mode]:>6,} jobs: "
                            f"{rate:>9,.0f} jobs/s"
                        )
                        sys.stdout.flush()
        finally:
            for url in (empty, full):
                await drop(url)
    return {
        "backend": backend,
        "durability": durability,
        "backlog": args.backlog,
        "fill_seconds": fill_s,
        "waiting_after_fill": waiting,
        "rates": rates,
    }


def med(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def report(results: Sequence[dict[str, Any]]) -> None:
    cols = ("backend", "mode", "empty jobs/s", "backlog jobs/s", "backlog/empty")
    rows = []
    for res in results:
        for mode in MODES:
            empty, full = res["rates"][mode]["empty"], res["rates"][mode]["backlog"]
            ratio = statistics.median(full) / statistics.median(empty)
            res.setdefault("ratios", {})[mode] = ratio
            rows.append((res["backend"], mode, med(empty), med(full), f"{ratio:.2f}x"))
    widths = [max(len(r[i]) for r in (cols, *rows)) for i in range(len(cols))]
    print("\n" + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("\nmedians (min-max); target: backlog/empty >= 0.5")
    for res in results:
        fill = f"backlog of {res['backlog']:,} filled in {res['fill_seconds']:.1f} s"
        print(f"  {res['backend']}: {fill}; {res['durability']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-jobs", type=int, default=20_000, help="jobs via submit_many")
    parser.add_argument("--single-jobs", type=int, default=2_000, help="single submit calls")
    parser.add_argument("--quick", action="store_true", help="backlog 100,000, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.backlog, args.runs = 100_000, 1
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(args.backends) - set(BACKENDS) or args.backlog < 1 or args.runs < 1:
        parser.error(f"--backends from {','.join(BACKENDS)}; --backlog and --runs >= 1")
    return args


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [await run_backend(backend, args) for backend in args.backends]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"enqueue with a backlog: {args.backlog:,} queued jobs; submit_many of "
        f"{args.batch_jobs:,} jobs in calls of {SUBMIT_BATCH:,}, {args.single_jobs:,} single "
        f"submits; {args.runs} runs; {os.cpu_count()} cpus"
    )
    results = asyncio.run(amain(args))
    report(results)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args), "results": results}
    RESULTS_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {RESULTS_FILE.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
