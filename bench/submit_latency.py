"""Submit latency and rate: ``POST /v1/jobs`` on genspool against the least a service can do.

    python bench/submit_latency.py [--rate 500] [--seconds 20] [--clients 16] [--rounds 3]

Starts ``genspool serve`` (API and worker in one process, SQLite, the zero-latency ``echo``
model so the worker keeps up) and, beside it, ``bench/_bare.py``: bare FastAPI that validates
the body and inserts one row into SQLite per submit, under the same uvicorn.

1. Open loop, latency: requests sent on a fixed schedule whatever the answers do (a slow
   server cannot slow the load), ``POST /v1/jobs`` against ``GET /healthz`` of the same server.
   Target: p99 of the submit at most 25 ms.
2. Closed loop, rate: ``--clients`` keep-alive clients submit as fast as they are answered,
   genspool and the bare service in interleaved rounds. Target: genspool at least 0.6x the
   bare rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import RawClient, free_port, healthy, pct, serving

MODELS = "models:\n  - name: echo\n    provider: echo\n    batching: {max_batch_size: 64}\n"
JOB = {
    "url": "/v1/chat/completions",
    "body": {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]},
}


async def load(
    client: RawClient, method: str, path: str, rate: int, seconds: float
) -> tuple[list[float], int]:
    """Open loop: request i is due at ``i / rate``; its latency counts from when it was due,
    so a server that falls behind is charged for the wait (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    body = json.dumps(JOB).encode() if method == "POST" else None

    async def one(due: float) -> None:
        nonlocal errors
        try:
            status = await client.request(method, path, body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        errors += status >= 400
        latencies.append(time.perf_counter() - due)

    tasks, begin = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        due = begin + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return latencies, errors


async def measure(url: str, rate: int, seconds: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    client = RawClient(host, int(port))
    await load(client, "GET", "/healthz", 100, 1)  # open some connections
    base, base_err = await load(client, "GET", "/healthz", rate, seconds)
    sub, sub_err = await load(client, "POST", "/v1/jobs", rate, seconds)
    client.close()
    for name, lat, err in (("GET /healthz", base, base_err), ("POST /v1/jobs", sub, sub_err)):
        print(
            f"{name:14} n={len(lat):6} errors={err:3}  p50 {pct(lat, 0.5):6.2f} ms  "
            f"p99 {pct(lat, 0.99):6.2f} ms"
        )
    print(
        f"p99 ratio submit/healthz: {pct(sub, 0.99) / pct(base, 0.99):.2f}; "
        f"submit p99 {pct(sub, 0.99):.2f} ms (target <= 25 ms)"
    )


async def closed_loop(url: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` connections, each submitting the next job when the last is answered."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(JOB).encode()
    latencies: list[float] = []

    async def one_client() -> None:
        client = RawClient(host, int(port))
        end = time.perf_counter() + seconds
        try:
            while (start := time.perf_counter()) < end:
                status = await client.request("POST", "/v1/jobs", body)
                if status >= 400:
                    raise SystemExit(f"{url}: POST /v1/jobs answered {status}")
                latencies.append(time.perf_counter() - start)
        finally:
            client.close()

    begin = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - begin), latencies


async def compare(genspool: str, bare: str, clients: int, seconds: float, rounds: int) -> None:
    rates: dict[str, list[float]] = {"genspool": [], "bare": []}
    lats: dict[str, list[float]] = {"genspool": [], "bare": []}
    for url in (genspool, bare):
        await closed_loop(url, clients, 1.0)  # warm up
    for _ in range(rounds):
        for name, url in (("bare", bare), ("genspool", genspool)):
            rate, lat = await closed_loop(url, clients, seconds)
            rates[name].append(rate)
            lats[name] += lat
    for name in ("bare", "genspool"):
        print(
            f"{name:9} c={clients}: {max(rates[name]):7.0f} submits/s (best of {rounds}; "
            f"{', '.join(f'{r:.0f}' for r in rates[name])})  p50 {pct(lats[name], 0.5):.2f} ms"
        )
    ratio = max(rates["genspool"]) / max(rates["bare"])
    p50 = pct(lats["genspool"], 0.5) / pct(lats["bare"], 0.5)
    print(f"rate ratio genspool/bare: {ratio:.2f} (target >= 0.6); p50 ratio {p50:.2f}")


@contextmanager
def bare_service() -> Iterator[str]:
    """``bench/_bare.py`` under uvicorn, on a fresh SQLite file."""
    tmp = Path(tempfile.mkdtemp(prefix="genspool-bare-"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "_bare:app",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=tmp, env={**os.environ, "BARE_DB": str(tmp / "bare.db")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not healthy(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the bare service did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=5.0, help="seconds per rate round")
    parser.add_argument("--only", choices=["latency", "rate"], help="run one part")
    args = parser.parse_args()
    with serving(MODELS) as (url, _), bare_service() as bare:
        if args.only != "rate":
            asyncio.run(measure(url, args.rate, args.seconds))
        if args.only != "latency":
            asyncio.run(compare(url, bare, args.clients, args.round_s, args.rounds))


if __name__ == "__main__":
    main()
