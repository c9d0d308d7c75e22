"""Goodput under overload: bulk submissions at 1x and at 10x a model's capacity, with
interactive requests going on beside them.

    python bench/overload.py [--seconds 15] [--capacity 40]

Starts ``genspool serve`` (SQLite) with an echo model (named as such: it computes nothing) whose
``options.latency_ms``, ``batching.max_batch_size`` and ``max_concurrency`` give it a known
capacity, and ``admission.max_queue_depth`` set to two seconds of that capacity. Three phases
of ``--seconds`` each:

1. unloaded: only the interactive requests (``POST /v1/chat/completions``, two per second,
   each waiting for its answer through the queue);
2. 1x: bulk ``POST /v1/jobs`` at the model's capacity, open loop, plus the interactive ones;
3. 10x: bulk at ten times the capacity (most of it is shed with 429), plus the interactive ones.

Goodput is the jobs completed per second inside a phase (read from the store). Targets: goodput
at 10x is at least 90 % of goodput at 1x; the p99 time-to-result of the accepted interactive
requests at 10x is at most 3x its unloaded value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

from _common import RawClient, pct, serving

BATCH, CONCURRENCY = 4, 1
PROBES_PER_S = 2.0


def models_yaml(capacity: float) -> str:
    latency_ms = 1000 * BATCH * CONCURRENCY / capacity
    return (
        "models:\n  - name: echo\n    provider: echo\n"
        f"    options: {{latency_ms: {latency_ms:g}}}\n"
        f"    batching: {{max_batch_size: {BATCH}, max_wait_ms: 5,"
        f" max_concurrency: {CONCURRENCY}}}\n"
        f"    admission: {{max_queue_depth: {int(2 * capacity)}}}\n"
    )


def body(text: str) -> bytes:
    return json.dumps({"model": "echo", "messages": [{"role": "user", "content": text}]}).encode()


async def bulk(client: RawClient, rate: float, seconds: float) -> Counter[int]:
    """Open-loop ``POST /v1/jobs`` at ``rate``; the count of each status code answered."""
    codes: Counter[int] = Counter()
    job = json.dumps({"url": "/v1/chat/completions", "body": json.loads(body("bulk"))}).encode()

    async def one() -> None:
        codes[await client.request("POST", "/v1/jobs", job)] += 1

    tasks, begin = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        if (delay := begin + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return codes


async def probes(client: RawClient, seconds: float) -> tuple[list[float], int]:
    """Interactive chat completions, each waited for: (latencies of the answered, refused)."""
    latencies: list[float] = []
    refused = 0

    async def one() -> None:
        nonlocal refused
        start = time.perf_counter()
        status = await client.request("POST", "/v1/chat/completions", body("interactive"))
        if status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            refused += 1

    tasks, begin = [], time.perf_counter()
    for i in range(int(PROBES_PER_S * seconds)):
        if (delay := begin + i / PROBES_PER_S - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, refused


def completed_between(db: Path, start: float, end: float) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND finished_at BETWEEN ? AND ?",
            (start, end),
        ).fetchone()
    return int(row[0])


async def phase(
    name: str, url: str, db: Path, bulk_rate: float, seconds: float
) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    bulk_client, probe_client = RawClient(host, int(port)), RawClient(host, int(port))
    start = time.time()
    work = [probes(probe_client, seconds)]
    codes_task = asyncio.create_task(bulk(bulk_client, bulk_rate, seconds)) if bulk_rate else None
    (latencies, refused), *_ = await asyncio.gather(*work)
    codes = await codes_task if codes_task else Counter()
    end = time.time()
    bulk_client.close()
    probe_client.close()
    # Goodput inside the phase, leaving out its first second (the queue filling up).
    goodput = completed_between(db, start + 1, end) / (end - start - 1)
    out = {
        "goodput": goodput,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "accepted": codes[202],
        "shed": codes[429],
        "probe_refused": refused,
    }
    print(
        f"{name:9} bulk {bulk_rate:5.0f}/s: accepted {codes[202]:5} shed {codes[429]:5} "
        f"other {sum(codes.values()) - codes[202] - codes[429]:3} | goodput {goodput:6.1f} jobs/s"
        f" | interactive p50 {out['p50']:7.1f} ms p99 {out['p99']:7.1f} ms"
        f" ({len(latencies)} answered, {refused} refused)",
        flush=True,
    )
    await asyncio.sleep(3)  # let the queue drain before the next phase
    return out


async def run(url: str, db: Path, capacity: float, seconds: float) -> None:
    unloaded = await phase("unloaded", url, db, 0, seconds)
    one = await phase("1x", url, db, capacity, seconds)
    ten = await phase("10x", url, db, 10 * capacity, seconds)
    print(
        f"\ngoodput 10x / 1x: {ten['goodput'] / one['goodput']:.2f}  (target >= 0.90)\n"
        f"interactive p99 10x / unloaded: {ten['p99'] / unloaded['p99']:.2f}  (target <= 3)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--capacity", type=float, default=40, help="model jobs/s")
    args = parser.parse_args()
    with serving(models_yaml(args.capacity)) as (url, db):
        print(f"model capacity {args.capacity:g} jobs/s, max_queue_depth {int(2 * args.capacity)}")
        asyncio.run(run(url, db, args.capacity, args.seconds))


if __name__ == "__main__":
    main()
