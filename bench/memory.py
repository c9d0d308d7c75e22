"""Worker memory: RSS of a worker process after 50,000 jobs against its RSS after 5,000.

    python bench/memory.py [--jobs 50000]

This process enqueues the jobs; a child process runs a genspool worker (zero-latency ``echo``
model, SQLite) and reads its own RSS when 5,000 and when all jobs are done. A queue that leaks
per job grows between the two. Target: ratio at most 1.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import rss_mb

from genspool.backends.sqlite import SQLiteBackend
from genspool.config import ModelConfig
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.runtime import ModelRegistry

ECHO = ModelConfig(
    name="echo",
    provider="echo",
    batching={"max_batch_size": 256, "max_wait_ms": 0, "max_concurrency": 2},
)
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello there, worker"}]}


async def enqueue(db: str, n: int) -> None:
    async with Queue(SQLiteBackend(db)) as queue:
        for i in range(0, n, 1000):
            await queue.submit_many(
                [
                    Job(url="/v1/chat/completions", body=BODY, model="echo")
                    for _ in range(min(1000, n - i))
                ]
            )


async def work(db: str, n: int, early: int) -> dict[str, float]:
    async with Queue(SQLiteBackend(db)) as queue:
        worker = Worker(queue, ModelRegistry([ECHO]))
        task = asyncio.create_task(worker.run())
        marks: dict[str, float] = {}
        deadline = time.time() + 600
        while worker.completed < n and time.time() < deadline:
            if worker.completed >= early and "early" not in marks:
                marks["early"] = rss_mb()
            await asyncio.sleep(0.01)
        marks["late"] = rss_mb()
        marks["done"] = worker.completed
        worker.stop()
        await task
        return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--early", type=int, default=5_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(work(args.child, args.jobs, args.early))))
        return
    db = str(Path(tempfile.mkdtemp(prefix="genspool-mem-")) / "g.db")
    asyncio.run(enqueue(db, args.jobs))
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            db,
            "--jobs",
            str(args.jobs),
            "--early",
            str(args.early),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"worker RSS after {args.early:,} jobs: {marks['early']:.1f} MB")
    print(f"worker RSS after {int(marks['done']):,} jobs: {marks['late']:.1f} MB")
    print(f"ratio: {marks['late'] / marks['early']:.3f}  (target <= 1.1)")


if __name__ == "__main__":
    main()
