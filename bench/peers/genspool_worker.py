"""genspool's side of ``bench/queue_path.py``, measured the way the harness measures its peers.

Enqueue N no-op chat jobs through genspool's library from this (producer) process, timing the
enqueue loop alone; then start ONE ``genspool worker`` process (the real command) serving the
zero-latency ``echo`` model, noting ``time.time()`` just before starting it; watch the store
for stored results; stop the worker (SIGTERM) after the last one. Prints one JSON line::

    {"n": N, "enqueue_seconds": S, "worker_started": EPOCH, "done": N,
     "first_seen": EPOCH, "first_seen_done": K, "last_seen": EPOCH}

Arguments: ``--jobs N --synchronous FULL|NORMAL --workdir DIR --timeout SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genspool.backends.sqlite import SQLiteBackend
from genspool.core.job import Job
from genspool.core.queue import Queue

MODELS = """models:
  - name: echo
    provider: echo
    max_batch_size: 256
    max_wait_ms: 0
    max_concurrency: 2
"""
BODY = {"model": "echo", "messages": [{"role": "user", "content": "noop"}]}


async def enqueue(db: str, n: int, synchronous: str) -> float:
    queue = Queue(SQLiteBackend(db, synchronous=synchronous))
    await queue.connect()
    jobs = [Job(url="/v1/chat/completions", body=BODY, model="echo") for _ in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 1000):
        await queue.submit_many(jobs[i : i + 1000])
    seconds = time.perf_counter() - start
    await queue.close()
    return seconds


def watch(db: str, n: int, deadline: float) -> dict[str, float | int]:
    """Poll the count of stored results every 5 ms until all N are there."""
    os.sched_setaffinity(0, {0}) if hasattr(os, "sched_setaffinity") else None
    conn = sqlite3.connect(db)
    count = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
    first_seen, first_done, done = 0.0, 0, 0
    while done < n and time.time() < deadline:
        done = conn.execute(count).fetchone()[0]
        if done and not first_seen:
            first_seen, first_done = time.time(), done
        if done < n:
            time.sleep(0.005)
    return {
        "done": done,
        "first_seen": first_seen,
        "first_seen_done": first_done,
        "last_seen": time.time(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genspool-bench-"))
    db = str(workdir / "genspool.db")
    (workdir / "models.yaml").write_text(MODELS)
    enqueue_s = asyncio.run(enqueue(db, args.jobs, args.synchronous))
    cmd = [
        sys.executable,
        "-m",
        "genspool",
        "worker",
        "--config",
        str(workdir / "models.yaml"),
        "--db",
        f"sqlite:///{db}?synchronous={args.synchronous}",
    ]
    env = {**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"}
    started = time.time()
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = watch(db, args.jobs, started + args.timeout)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            err = b""
    if seen["done"] < args.jobs:
        print(
            json.dumps(
                {
                    "error": f"only {seen['done']} of {args.jobs} done; worker said: "
                    f"{err.decode()[-500:]}"
                }
            ),
            flush=True,
        )
        return
    print(
        json.dumps(
            {"n": args.jobs, "enqueue_seconds": enqueue_s, "worker_started": started, **seen}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
