"""genspool's side of ``bench/queue_path.py``, measured the way the harness measures its peers.

Enqueue N no-op chat jobs through genspool's library from this (producer) process, timing the
enqueue loop alone; then start ONE ``genspool worker`` process (the real command) serving the
zero-latency ``echo`` model, noting ``time.time()`` just before starting it; watch the store
for stored results; stop the worker (SIGTERM) after the last one. Prints one JSON line::

    {"n": N, "enqueue_seconds": S, "worker_started": EPOCH, "done": N,
     "first_seen": EPOCH, "first_seen_done": K, "last_seen": EPOCH}

Arguments: ``--jobs N --synchronous FULL|NORMAL --workdir DIR --timeout SECONDS``.

For ``bench/scaleout.py``, which starts the worker processes itself, three subcommands work on
any backend URL (``--db``), the way the other peer modules' commands do (see ``_common.py``):

* ``enqueue --db URL --jobs N``: submit N jobs with ``Queue.submit_many`` in batches of 1000;
  prints ``{"n": N, "seconds": S}``, the loop alone;
* ``wait --db URL --jobs N --ready FILE``: the monitor. It counts finished jobs as N minus the
  unfinished ones in ``Queue.depth()`` (SQLite, PostgreSQL, Redis: an indexed count or one
  hash read); on NATS, where ``depth()`` scans every record, it counts the purge notices the
  backend publishes for each job that ended (one stream-info request). After the last one it
  checks through the library that no job is unfinished or failed;
* ``drop --db URL``: remove the run's namespace (``Storage.drop()``).
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from _common import Tracker, emit, emit_enqueue

from genspool.backends import JobFilter, open_storage
from genspool.backends.sqlite import SQLiteBackend
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue

MODELS = """models:
  - name: echo
    provider: echo
    batching: {max_batch_size: 256, max_wait_ms: 0, max_concurrency: 2}
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


# -- subcommands for bench/scaleout.py -----------------------------------------------------


async def enqueue_url(url: str, n: int) -> float:
    """Submit ``n`` echo jobs to the backend at ``url`` in batches of 1000; the loop's time."""
    async with Queue(open_storage(url)) as queue:
        jobs = [Job(url="/v1/chat/completions", body=BODY, model="echo") for _ in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 1000):
            await queue.submit_many(jobs[i : i + 1000])
        return time.perf_counter() - start


async def unfinished(queue: Queue) -> int:
    """Jobs still queued, running or retrying, per the backend's own count."""
    return sum(sum(per.values()) for per in (await queue.depth()).values())


async def nats_counter(url: str) -> Callable[[], Awaitable[int]]:
    """Count the jobs that ended on NATS: one purge notice per ended job, read from the
    timer stream's per-subject counts (O(1) in the number of jobs)."""
    import nats

    prefix = parse_qs(urlsplit(url).query).get("prefix", ["genspool"])[0]
    conn = await nats.connect(urlsplit(url)._replace(query="").geturl())
    js = conn.jetstream()
    subject = f"{prefix}.timer.purge"

    async def count() -> int:
        info = await js.stream_info(f"{prefix}_timers", subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))

    return count


async def watch_url(url: str, n: int, ready: Path | None, timeout: float, poll_s: float) -> None:
    """The monitor: poll the count of finished jobs until it reaches ``n``, then verify."""
    async with Queue(open_storage(url)) as queue:
        if url.startswith("nats"):
            count = await nats_counter(url)
        else:

            async def count() -> int:
                return n - await unfinished(queue)

        if ready is not None:
            await asyncio.to_thread(ready.touch)
        tracker = Tracker(n)
        deadline = time.monotonic() + timeout
        while tracker.done < n and time.monotonic() < deadline:
            tracker.update(await count())
            if tracker.done < n:
                await asyncio.sleep(poll_s)
        report = tracker.report(timed_out=tracker.done < n)
        report["unfinished"] = await unfinished(queue)
        failed = await queue.list_jobs(JobFilter(status=JobStatus.FAILED, limit=1))
        report["failed_any"] = bool(failed)
        if report["unfinished"] or failed:
            report["timed_out"] = True  # the harness reports it as an incomplete run
    emit(report)


async def drop_url(url: str) -> None:
    async with Queue(open_storage(url)) as queue:
        await queue.storage.drop()


def subcommand(args: argparse.Namespace) -> None:
    if args.command == "enqueue":
        emit_enqueue(args.jobs, asyncio.run(enqueue_url(args.db, args.jobs)))
    elif args.command == "wait":
        asyncio.run(watch_url(args.db, args.jobs, args.ready, args.timeout, args.poll))
    else:
        asyncio.run(drop_url(args.db))
        emit({"dropped": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="?", choices=["run", "enqueue", "wait", "drop"])
    parser.add_argument("--db", default=None, help="backend URL (subcommands)")
    parser.add_argument("--ready", type=Path, default=None, help="file the monitor creates")
    parser.add_argument("--poll", type=float, default=0.02, help="monitor poll interval, s")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.command not in (None, "run"):
        if not args.db:
            parser.error(f"{args.command} needs --db URL")
        subcommand(args)
        return
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
