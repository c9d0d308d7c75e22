"""Dynamic batching: 2,000 short texts as 2,000 separate embedding jobs, against the same model
called directly at its best batch size, in the same process.

    python bench/batching.py [--texts 2000] [--runs 3] [--http] [--clients 64]

In process, the jobs are submitted to the queue facade; with ``--http`` they go to
``genspool serve`` (a subprocess, SQLite, the bundled embedding model) as ``POST
/v1/embeddings`` calls from ``--clients`` concurrent keep-alive connections, each waiting for
its answer, as users send them; the server is started before the clock starts.
Target: the queued rate is at least 85 % of the direct rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable

from _common import RawClient, median, running, serving

from genspool.config import ModelConfig
from genspool.core.job import Job
from genspool.providers.onnx_embed import OnnxEmbeddingProvider

WORDS = [
    "the",
    "queue",
    "holds",
    "each",
    "request",
    "until",
    "a",
    "worker",
    "leases",
    "a",
    "batch",
    "and",
    "calls",
    "the",
    "model",
    "while",
    "clients",
    "wait",
    "for",
    "results",
    "over",
    "a",
    "websocket",
    "or",
    "poll",
    "by",
    "id",
    "with",
    "retries",
    "and",
    "backoff",
]
MODEL = ModelConfig(
    name="all-minilm-l6-v2",
    provider="onnx_embedding",
    context_window=256,
    batching={"max_batch_size": 256, "max_wait_ms": 5, "max_concurrency": 1},
)


def texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) for _ in range(n)]


def direct(provider: OnnxEmbeddingProvider, items: list[str], batch: int) -> float:
    provider.sub_batch = batch
    start = time.perf_counter()
    for i in range(0, len(items), 256):
        provider.embed(items[i : i + 256])
    return len(items) / (time.perf_counter() - start)


async def queued(items: list[str]) -> float:
    async with running([MODEL]) as (queue, worker):
        start = time.perf_counter()
        for text in items:  # one job per text, as separate clients would send them
            await queue.submit(
                Job(
                    url="/v1/embeddings",
                    model=MODEL.name,
                    body={"model": MODEL.name, "input": text},
                )
            )
        while worker.completed < len(items):
            await asyncio.sleep(0.005)
        return len(items) / (time.perf_counter() - start)


HTTP_MODELS = """\
models:
  - name: all-minilm-l6-v2
    provider: onnx_embedding
    context_window: 256
    batching: {max_batch_size: 256, max_wait_ms: 5, max_concurrency: 1}
"""


async def over_http(url: str, items: list[str], clients: int) -> float:
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"model": MODEL.name, "input": t}).encode() for t in items]
    pending = iter(bodies)

    async def client() -> None:
        conn = RawClient(host, int(port))
        try:
            for body in pending:
                status = await conn.request("POST", "/v1/embeddings", body)
                if status != 200:
                    raise SystemExit(f"POST /v1/embeddings answered {status}")
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--http", action="store_true", help="submit through genspool serve")
    parser.add_argument("--clients", type=int, default=64, help="HTTP connections (--http)")
    args = parser.parse_args()
    if args.http:
        with serving(HTTP_MODELS) as (url, _):
            asyncio.run(over_http(url, texts(200, seed=1), args.clients))  # warm up
            run_all(args, lambda items: asyncio.run(over_http(url, items, args.clients)))
    else:
        run_all(args, lambda items: asyncio.run(queued(items)))


def run_all(args: argparse.Namespace, submit: Callable[[list[str]], float]) -> None:
    items = texts(args.texts)
    provider = OnnxEmbeddingProvider(MODEL.name)
    provider._load()
    direct(provider, items[:64], 16)  # warm-up
    sizes = (8, 16, 32, 64)
    direct_rates: dict[int, list[float]] = {b: [] for b in sizes}
    queued_rates = []
    for _ in range(args.runs):  # interleaved, so drift of the machine hits both alike
        for b in sizes:
            direct_rates[b].append(direct(provider, items, b))
        queued_rates.append(submit(items))
    best = max(sizes, key=lambda b: median(direct_rates[b]))
    for b in sizes:
        print(f"direct, batch {b:2}: {median(direct_rates[b]):8.1f} texts/s")
    d, q = median(direct_rates[best]), median(queued_rates)
    print(f"direct, best batch {best}: {d:8.1f} texts/s")
    how = f"over HTTP, {args.clients} clients" if args.http else "in process"
    print(
        f"genspool, {args.texts} jobs {how}: {q:8.1f} texts/s  "
        f"(runs: {[round(r) for r in queued_rates]})"
    )
    print(f"ratio queued/direct: {q / d:.2f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
