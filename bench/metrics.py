"""``GET /metrics`` latency with many jobs stored, and RSS over many scrapes.

A SQLite store holds ``--jobs`` waiting jobs over ``--models`` models (the worst case for the
depth and age reads: every job is active), and every model's histograms and counters have
values, as in a deployment where each model has run jobs (observed directly: the series a
scrape renders, not the jobs that made them, are what costs); the app runs in process (ASGI
transport, no network). Printed: ``/metrics`` p50/p99 as scraped (the backend re-read and
the text rendered ahead in the background while scraped), p99 of a scrape that waits for a
backend read and a render every time (the path before either), each against ``/healthz``
measured in the same run, and RSS before, after the first 1,000 and after all ``--scrapes``
scrapes.

Target (issue 12): p99 <= 50 ms with 1,000,000 jobs and 100 models; RSS flat over 10,000
scrapes. The default is 100,000 jobs (a minute to fill); ``--full`` stores 1,000,000.

    python bench/metrics.py [--full] [--jobs N] [--models M] [--scrapes S] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import pct, rss_mb
from genspool.core.job import Job
from genspool.testing.inprocess import InProcess, serve

CHAT = "/v1/chat/completions"


async def fill(gs: InProcess, jobs: int, models: int) -> None:
    chunk = 5_000
    for start in range(0, jobs, chunk):
        batch = [
            Job(CHAT, {"messages": [{"role": "user", "content": "x"}]}, f"m{i % models}")
            for i in range(start, min(start + chunk, jobs))
        ]
        await gs.queue.submit_many(batch)


def ran(gs: InProcess, models: int) -> None:
    """Every model's series as if it had run jobs (each histogram and counter observed)."""
    s = gs.app.state.metrics.series
    for i in range(models):
        m = f"m{i}"
        for histogram in (s.queue_wait, s.run, s.end_to_end, s.call):
            histogram.labels(m).observe(0.3)
        s.batch.labels(m).observe(4)
        for outcome in ("ok", "error", "cancelled"):
            s.calls.labels(m, outcome).inc()
        for reason in ("timeout", "rate_limited", "lease_expired"):
            s.retries.labels(m, reason).inc()


async def timed(gs: InProcess, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await gs.client.get(path)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return out


async def main(jobs: int, models: int, scrapes: int, url: str | None) -> None:
    configs = [{"name": f"m{i}", "provider": "echo"} for i in range(models)]
    with tempfile.TemporaryDirectory() as tmp:
        url = url or f"sqlite:///{tmp}/bench.db"
        print(f"store: {url.split('?')[0]}")
        async with serve(configs, url=url) as gs:
            t = time.perf_counter()
            await fill(gs, jobs, models)
            print(f"stored {jobs:,} jobs over {models} models in {time.perf_counter() - t:.1f} s")
            ran(gs, models)
            series = sum(
                1 for line in (await gs.client.get("/metrics")).text.splitlines() if line[:1] != "#"
            )
            health = await timed(gs, "/healthz", 2_000)
            cached = await timed(gs, "/metrics", 2_000)
            metrics = gs.app.state.metrics
            metrics.snapshot.ttl_s, metrics.fresh_s = 0.0, 0.0  # everything at the scrape
            fresh = await timed(gs, "/metrics", 50)
            metrics.snapshot.ttl_s, metrics.fresh_s = 1.0, 1.0
            gc.collect()
            rss = [rss_mb()]
            await timed(gs, "/metrics", 1_000)
            gc.collect()
            rss.append(rss_mb())
            await timed(gs, "/metrics", max(scrapes - 1_000, 0))
            gc.collect()
            rss.append(rss_mb())
    h99 = pct(health, 0.99)
    print(f"series per scrape: {series}")
    print(f"/healthz  p50 {pct(health, 0.5):.2f} ms  p99 {h99:.2f} ms  (baseline)")
    paths = (("/metrics (as scraped)", cached), ("/metrics (read+render at scrape)", fresh))
    for name, values in paths:
        p99 = pct(values, 0.99)
        print(
            f"{name}  p50 {pct(values, 0.5):.2f} ms  p99 {p99:.2f} ms"
            f"  = {p99 / h99:.1f}x /healthz p99  (target p99 <= 50 ms)"
        )
    print(
        f"RSS: {rss[0]:.1f} MB before, {rss[1]:.1f} MB after 1,000 scrapes, "
        f"{rss[2]:.1f} MB after {scrapes:,} (growth after the first 1,000: "
        f"{rss[2] - rss[1]:+.1f} MB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000,000 jobs (the target's size)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=10_000)
    parser.add_argument("--url", help="another store (default: a temporary SQLite file)")
    args = parser.parse_args()
    jobs = 1_000_000 if args.full else args.jobs
    asyncio.run(main(jobs, args.models, args.scrapes, args.url))
