"""Submit latency: p50/p99 of ``POST /v1/jobs`` at 500 requests/s for 20 s, against
``GET /healthz`` (the same server, the same HTTP stack, no queue write) at the same rate.

    python bench/submit_latency.py [--rate 500] [--seconds 20]

Starts ``genspool serve`` (API and worker in one process, SQLite, the zero-latency ``echo``
model so the worker keeps up) and an open-loop load generator in this process: requests are
sent on a fixed schedule whatever the answers do, so a slow server cannot slow the load.
Target: p99 of the submit at most 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MODELS = "models:\n  - name: echo\n    provider: echo\n    max_batch_size: 64\n"
JOB = {
    "url": "/v1/chat/completions",
    "body": {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    client: httpx.AsyncClient, method: str, path: str, rate: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            r = await client.request(method, path, json=JOB if method == "POST" else None)
            errors += r.status_code >= 400
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append(time.perf_counter() - start)

    tasks, begin = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(url: str, rate: int, seconds: float) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await load(client, "GET", "/healthz", 100, 1)  # warm the connection pool
        base, base_err = await load(client, "GET", "/healthz", rate, seconds)
        sub, sub_err = await load(client, "POST", "/v1/jobs", rate, seconds)
    for name, lat, err in (("GET /healthz", base, base_err), ("POST /v1/jobs", sub, sub_err)):
        print(
            f"{name:14} n={len(lat):6} errors={err:3}  p50 {pct(lat, 0.5):6.2f} ms  "
            f"p99 {pct(lat, 0.99):6.2f} ms"
        )
    print(
        f"p99 ratio submit/healthz: {pct(sub, 0.99) / pct(base, 0.99):.2f}; "
        f"submit p99 {pct(sub, 0.99):.2f} ms (target <= 25 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="genspool-latency-"))
    (tmp / "models.yaml").write_text(MODELS)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "genspool",
        "serve",
        "--port",
        str(port),
        "--config",
        str(tmp / "models.yaml"),
        "--db",
        f"sqlite:///{tmp}/g.db",
    ]
    server = subprocess.Popen(
        cmd,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(measure(url, args.rate, args.seconds))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
