"""Embedded exact vector search on 100k x 384: a 1 % pre-filter's p50, recall against float64
brute force, batched against single queries, and the optional ANN cache against exact.

    python bench/search.py [--rows 100000] [--queries 200] [--seed 7] [--no-ann]

Each figure is a ratio against a baseline measured in the same run, interleaved query by
query so the machine's load falls on both alike:

* filtered p50: the 1 %-selective search (``shard == s``, gather the 1,000 matching rows and
  multiply only those) against scoring all 100k rows and masking after (target p50 <= 30 ms);
* recall@10 of filtered and unfiltered searches against brute force in float64 (target 1.0);
* batched: 64 queries per matrix product against the same queries one by one, in queries/s
  (target >= 3x);
* ANN (when usearch is installed): HNSW p50 and recall@10 against exact p50, on clustered
  vectors with queries drawn from the same clusters (as embeddings and their queries are:
  i.i.d. random 384-d vectors have no neighbourhoods, HNSW recall on them stays near 0.85, and
  ``build_ann`` rightly refuses to keep the index).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from genspool.rag.ann import ann_available
from genspool.rag.exact import Collection, unit_rows

DIM = 384
Array = np.ndarray[Any, np.dtype[Any]]


def timed(call: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


def p50_ms(values: list[float]) -> float:
    return float(np.median(values)) * 1000


def sharded(vectors: Array) -> Collection:
    """A collection whose rows carry ``shard = i % 100``: each shard is 1 % of the rows."""
    collection = Collection(DIM, ann_threshold=None)
    ids = [str(i) for i in range(len(vectors))]
    collection.add(ids, vectors, [{"shard": i % 100} for i in range(len(vectors))])
    return collection


def filtered_p50(collection: Collection, queries: Array) -> tuple[float, float]:
    """p50 of a 1 % filter, gathered (the default) and scored-all-then-masked (baseline)."""
    gathered, masked = [], []
    for i, query in enumerate(queries):
        flt = {"type": "eq", "key": "shard", "value": i % 100}
        collection.gather_below = 0.15
        gathered.append(timed(collection.search, query, 10, flt))
        collection.gather_below = 0.0
        masked.append(timed(collection.search, query, 10, flt))
    collection.gather_below = 0.15
    return p50_ms(gathered), p50_ms(masked)


def recall(collection: Collection, vectors64: Array, queries: Array, filtered: bool) -> float:
    """Share of the float64 brute-force top 10 found, over ``queries``."""
    found = 0
    for i, query in enumerate(queries):
        shard = i % 100
        rows = np.arange(shard, len(vectors64), 100) if filtered else np.arange(len(vectors64))
        scores = vectors64[rows] @ query.astype(np.float64)
        truth = {str(r) for r in rows[np.argsort(-scores)[:10]]}
        flt = {"type": "eq", "key": "shard", "value": shard} if filtered else None
        (hits,) = collection.search(query, 10, flt)
        found += len(truth & {h[0] for h in hits})
    return found / (10 * len(queries))


def batched_rates(collection: Collection, queries: Array, batch: int = 64) -> tuple[float, float]:
    """Queries/s, unfiltered top 10: ``batch`` queries per search call, and one per call."""
    batched = single = 0.0
    for start in range(0, len(queries) - batch + 1, batch):
        chunk = queries[start : start + batch]
        batched += timed(collection.search, chunk, 10)
        single += sum(timed(collection.search, q, 10) for q in chunk)
    n = len(queries) // batch * batch
    return n / batched, n / single


def clustered(n: int, rng: np.random.Generator, centres: int = 500) -> Array:
    middles = rng.standard_normal((centres, DIM), dtype=np.float32)
    noise = rng.standard_normal((n, DIM), dtype=np.float32)
    return unit_rows(middles[rng.integers(0, centres, n)] + 0.6 * noise, DIM)


def ann_figures(rows: int, n_queries: int, rng: np.random.Generator) -> dict[str, float]:
    """Build the ANN cache on clustered vectors; its p50 and recall@10 against exact."""
    vectors = clustered(rows + n_queries, rng)
    collection = Collection(DIM, ann_threshold=rows)
    collection.add([str(i) for i in range(rows)], vectors[:rows])
    build = timed(collection.refresh_ann)
    if collection.ann is None:
        return {"build_s": build, "ann_p50": float("nan"), "exact_p50": float("nan"), "recall": 0}
    queries = vectors[rows:]  # fresh draws from the same clusters, as real queries are
    ann_times, exact_times, found = [], [], 0
    for query in queries:
        ann_times.append(timed(collection.search, query, 10))
        exact_times.append(timed(collection.search, query, 10, exact=True))
        (approx,) = collection.search(query, 10)
        (exact,) = collection.search(query, 10, exact=True)
        found += len({h[0] for h in approx} & {h[0] for h in exact})
    return {
        "build_s": build,
        "ann_p50": p50_ms(ann_times),
        "exact_p50": p50_ms(exact_times),
        "recall": found / (10 * len(queries)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-ann", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    vectors = unit_rows(rng.standard_normal((args.rows, DIM), dtype=np.float32), DIM)
    queries = unit_rows(rng.standard_normal((max(args.queries, 64), DIM), dtype=np.float32), DIM)
    collection = sharded(vectors)
    collection.search(queries[0], 10)  # warm BLAS up
    print(f"{args.rows:,} x {DIM} random unit vectors; load average {os.getloadavg()[0]:.1f}")

    gathered, masked = filtered_p50(collection, queries)
    unfiltered = p50_ms([timed(collection.search, q, 10) for q in queries[:50]])
    vectors64 = vectors.astype(np.float64)
    recall_filtered = recall(collection, vectors64, queries[:50], filtered=True)
    recall_all = recall(collection, vectors64, queries[:50], filtered=False)
    del vectors64
    batched, single = batched_rates(collection, np.tile(queries, (2, 1))[:256])

    rows = [
        ("p50, 1 % pre-filter (ms)", gathered, masked, masked / gathered, "<= 30 ms"),
        ("p50, unfiltered (ms)", unfiltered, None, None, ""),
        ("recall@10, 1 % filter", recall_filtered, None, None, "1.0"),
        ("recall@10, unfiltered", recall_all, None, None, "1.0"),
        ("queries/s, 64 per matmul", batched, single, batched / single, ">= 3x"),
    ]
    if ann_available() and not args.no_ann:
        ann = ann_figures(args.rows, 100, rng)
        speedup = ann["exact_p50"] / ann["ann_p50"]
        rows += [
            ("ANN p50 (ms), clustered", ann["ann_p50"], ann["exact_p50"], speedup, ""),
            ("ANN recall@10 vs exact", ann["recall"], None, None, ">= 0.95"),
            ("ANN build (s)", ann["build_s"], None, None, ""),
        ]
    print_table(rows)


def print_table(rows: list[tuple[str, float, float | None, float | None, str]]) -> None:
    print(f"{'figure':<28}{'value':>10}{'baseline':>10}{'ratio':>8}  target")
    for name, value, baseline, ratio, target in rows:
        base = f"{baseline:10.2f}" if baseline is not None else " " * 10
        times = f"{ratio:7.1f}x" if ratio is not None else " " * 8
        print(f"{name:<28}{value:10.3f}{base}{times}  {target}")
    print("baselines: score every row then mask; the same queries one per call; exact search")


if __name__ == "__main__":
    main()
