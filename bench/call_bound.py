"""What bounding every backend call costs: PostgreSQL and Redis calls with the backend's
``call_timeout_s`` (each call a task the caller can abandon) against the same calls unbounded,
interleaved in one process.

    python bench/call_bound.py [--calls 3000] [--rounds 5]

A call is ``get_many`` of 10 jobs (a read the API makes per request) and ``kv_get`` (the
smallest call); URLs from GENSPOOL_TEST_POSTGRES_URL / GENSPOOL_TEST_REDIS_URL, else loopback,
in a namespace of this script's own that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from _common import median

from genspool.backends import backend_from_url
from genspool.core.job import Job

URLS = {
    "postgres": os.environ.get(
        "GENSPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "redis": os.environ.get("GENSPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


def namespaced(kind: str) -> str:
    tag = f"gs_bench_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in URLS[kind] else "?"
    return f"{URLS[kind]}{sep}{'schema' if kind == 'postgres' else 'prefix'}={tag}"


async def rate(backend: object, calls: int, ids: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(calls):
        await backend.get_many(ids)  # type: ignore[attr-defined]
    reads = calls / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(calls):
        await backend.kv_get("bench", "k")  # type: ignore[attr-defined]
    return reads, calls / (time.perf_counter() - start)


async def measure(kind: str, calls: int, rounds: int) -> None:
    backend = backend_from_url(namespaced(kind))
    await backend.connect()
    try:
        jobs = [Job(url="/v1/chat/completions", body={}, model="m") for _ in range(10)]
        await backend.enqueue(jobs)
        ids = [j.id for j in jobs]
        bounded = type(backend).call_timeout_s
        got: dict[str, list[tuple[float, float]]] = {"bounded": [], "unbounded": []}
        await rate(backend, calls // 10, ids)  # warm up
        for _ in range(rounds):
            for name, limit in (("unbounded", None), ("bounded", bounded)):
                backend.call_timeout_s = limit
                got[name].append(await rate(backend, calls, ids))
        for what, i in (("get_many(10)", 0), ("kv_get", 1)):
            b = median([r[i] for r in got["bounded"]])
            u = median([r[i] for r in got["unbounded"]])
            print(f"{kind:8} {what:13} bounded {b:8.0f}/s  unbounded {u:8.0f}/s  ratio {b / u:.2f}")
    finally:
        await backend.destroy()
        await backend.drop()
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for kind in URLS:
        asyncio.run(measure(kind, args.calls, args.rounds))


if __name__ == "__main__":
    main()
