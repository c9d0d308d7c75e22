"""Cron ticks across processes: N ticks of an every-second schedule, fired by P ``genspool api``
processes at once, must make exactly N runs — none twice, none missed.

    python bench/pipelines.py [--ticks 1000] [--processes 4] [--speed 12.5]
                              [--backend postgres|sqlite] [--drain 120]

P ``genspool api`` processes and one ``genspool worker`` share one store (a fresh PostgreSQL
schema on ``GENSPOOL_TEST_POSTGRES_URL``, default the local server's ``test`` database,
dropped afterwards; or a SQLite file the processes share). Each API process runs the scheduler
(no leader is elected: each fires every tick it sees due, and the store's unique run key
``cron:{pipeline}:{tick}`` keeps the first). The schedules run on the fake clock
``GENSPOOL_FAKE_SCHEDULE_CLOCK`` (the same in every process), ``--speed`` fake seconds per
real second, so 1,000 ticks of the every-second cron take ``ticks / speed`` real seconds
(80 s at the default 12.5). The pipeline has one inline item and an echo model step (named as
such: it computes nothing), keyed by the run, so each run does one model call.

The window is the ticks ``FAKE0+1 … FAKE0+N`` (the clock reaches FAKE0 once every process
answers ``/healthz``). Read from the store afterwards (its ``PipelineStore`` role, as the API
reads it): the ticks recorded in the window by outcome, the instants with no record (missed),
the runs whose key is a window tick's, and any key with more than one run or a tick whose run
is not that key's (duplicates). Printed: runs/ticks (target 1.000), duplicates and missed
(target 0), the lag from each tick to its run's creation (p50/p99, in real milliseconds and
fake seconds), and how many ended ``completed`` once the
worker drained them (``--drain`` seconds at most).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from _common import free_port, healthy

from genspool.backends import open_storage
from genspool.core.pipeline import PipelineRun, Tick
from genspool.core.roles import PipelineStore, RunFilter

PIPELINE = "ticker"
POSTGRES = os.environ.get("GENSPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ENDED = frozenset({"completed", "failed", "cancelled"})
#: Real seconds from the clock's start to FAKE0, for the processes to come up (4 took 22 s
#: on 2 cores).
START_S, START_PER_PROCESS_S = 10.0, 8.0


def models_file(root: Path) -> Path:
    pipeline = {
        "name": PIPELINE, "on": {"http": False, "schedule": {"cron": "* * * * * *"}},
        "source": {"items": [{"text": "tick"}]}, "key": "{{run.id}}",
        "steps": [{"id": "echo", "model": "echo", "prompt": "{{item.text}} {{run.id}}"}],
    }  # fmt: skip
    echo = {"name": "echo", "provider": "echo",
            "batching": {"max_batch_size": 32, "max_wait_ms": 5, "max_concurrency": 4}}  # fmt: skip
    path = root / "models.yaml"
    doc = {"bundled": False, "models": [echo], "pipelines": [pipeline]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def store_url(backend: str, root: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{root}/bench.db"
    return f"{POSTGRES}?schema=gs_bench_{uuid.uuid4().hex[:10]}"


class Deployment:
    """P API processes and one worker on one store, on one fake schedule clock."""

    def __init__(self, url: str, models: Path, root: Path, clock: str) -> None:
        self.url, self.models, self.root = url, models, root
        self.env = {**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING",
                    "GENSPOOL_FAKE_SCHEDULE_CLOCK": clock}  # fmt: skip
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        command = [sys.executable, "-m", "genspool", *args, "--db", self.url,
                   "--config", str(self.models)]  # fmt: skip
        proc = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def api(self, n: int) -> None:
        port = free_port()
        proc = self.start("api", "--host", "127.0.0.1", "--port", str(port), name=f"api-{n}")
        deadline = time.monotonic() + 60
        while not healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / f"api-{n}.log").read_text(errors="replace")
                raise SystemExit(f"genspool api {n} did not start:\n{log[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def read_window(
    store: PipelineStore, fake0: float, ticks: int
) -> tuple[list[Tick], list[PipelineRun]]:
    """The window's ticks (latest first) and every run of the pipeline."""
    found: list[Tick] = []
    before: float | None = fake0 + ticks + 0.5
    while before is not None:
        page = await store.ticks_list(PIPELINE, before, 1000)
        found += [t for t in page if t.at > fake0]
        before = page[-1].at if len(page) == 1000 and page[-1].at > fake0 else None
    runs: list[PipelineRun] = []
    after: str | None = None
    while True:
        page_runs = await store.run_list(RunFilter(None, PIPELINE, after, 1000))
        runs += page_runs
        if len(page_runs) < 1000:
            return found, runs
        after = page_runs[-1].id


async def open_store(url: str) -> Any:
    storage = open_storage(url)
    await storage.connect()
    return storage


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


async def drained(store: PipelineStore, ids: set[str], timeout: float) -> dict[str, int]:
    """Wait until every run of ``ids`` ended (or ``timeout``); their statuses counted."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = Counter[str]()
        for run_id in ids:
            run = await store.run_get(run_id, None)
            statuses[run.status.value if run else "gone"] += 1
        active = sum(
            v for k, v in statuses.items() if k not in ("completed", "failed", "cancelled")
        )
        if not active or time.monotonic() > deadline:
            return dict(statuses)
        await asyncio.sleep(1.0)


def report(args: argparse.Namespace, fake0: float, ticks: list[Tick], runs: list[PipelineRun],
           statuses: dict[str, int]) -> int:  # fmt: skip
    n, speed = args.ticks, args.speed
    expected = {fake0 + i for i in range(1, n + 1)}
    outcomes = Counter(t.outcome for t in ticks)
    missed = len(expected - {t.at for t in ticks}) + outcomes["missed"] + outcomes["skipped"]
    keys = {f"cron:{PIPELINE}:{at:.0f}": at for at in expected}
    window = [r for r in runs if r.key in keys]
    per_key = Counter(r.key for r in window)
    by_id = {r.id: r for r in window}
    wrong = [t for t in ticks if t.outcome == "fired" and (
        t.run_id not in by_id or keys[by_id[t.run_id].key or ""] != t.at)]  # fmt: skip
    duplicates = sum(c - 1 for c in per_key.values()) + len(wrong)
    lags = [(r.created_at - keys[r.key or ""]) / speed for r in window]
    print(f"ticks in the window   {n} (every fake second, {speed:g}x: {n / speed:.0f} s real)")
    print(f"ticks recorded        {len(ticks)}  {dict(outcomes)}")
    print(f"runs of window ticks  {len(per_key)}  (runs / ticks = {len(per_key) / n:.3f},"
          " target 1.000)")  # fmt: skip
    print(f"duplicate runs        {duplicates}  (target 0)")
    print(f"missed ticks          {missed}  (target 0)")
    p50, p99 = pct(lags, 0.5), pct(lags, 0.99)
    print(f"tick -> run created   p50 {p50 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms real"
          f"  (p50 {p50 * speed:.2f} s  p99 {p99 * speed:.2f} s fake)")  # fmt: skip
    print(f"runs ended            {statuses}")
    ok = len(per_key) == n and duplicates == 0 and missed == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


async def measure(args: argparse.Namespace, root: Path) -> int:
    url = store_url(args.backend, root)
    storage = await open_store(url)  # makes the schema
    store = storage.pipelines
    start_s = START_S + START_PER_PROCESS_S * args.processes
    real0 = time.time() + start_s
    fake0 = float(math.floor(real0 / 60) * 60)  # a round minute, reached at real0
    deployment = Deployment(url, models_file(root), root, f"{real0}:{fake0}:{args.speed}")
    try:
        for n in range(args.processes):
            deployment.api(n + 1)
        deployment.start("worker", name="worker")
        up = time.time()
        if up > real0:
            raise SystemExit(
                f"the processes took {up - real0 + START_S:.0f} s to start (> {START_S} s)"
            )
        print(f"{args.processes} API processes + 1 worker up on {args.backend};"
              f" ticks from FAKE0 in {real0 - up:.1f} s")  # fmt: skip
        end = real0 + args.ticks / args.speed + 2.0
        while (left := end - time.time()) > 0:
            await asyncio.sleep(min(left, 10.0))
        ticks, runs = await read_window(store, fake0, args.ticks)
        window_ids = {r.id for r in runs if r.key and r.key.startswith(f"cron:{PIPELINE}:")
                      and fake0 < float(r.key.rsplit(":", 1)[1]) <= fake0 + args.ticks}  # fmt: skip
        statuses = await drained(store, window_ids, args.drain)
        return report(args, fake0, ticks, runs, statuses)
    finally:
        deployment.stop()
        if args.backend != "sqlite":
            await storage.drop()
        await storage.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--speed", type=float, default=12.5, help="fake seconds per real second")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--drain", type=float, default=120.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genspool-bench-pipelines-"))
    code = asyncio.run(measure(args, root))
    if code == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"the processes' logs: {root}")
    return code


if __name__ == "__main__":
    sys.exit(main())
