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
import json
import time

from _common import RawClient, pct, serving

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with serving(MODELS) as (url, _):
        asyncio.run(measure(url, args.rate, args.seconds))


if __name__ == "__main__":
    main()
