"""A drift report over 2 x 50,000 x 384 embeddings in <= 2 s of CPU (issue 12's target).

    python bench/drift.py [--rows 50000] [--dims 384] [--runs 3] [--seed 7]

Times :func:`genspool.drift.report.compare` (every method: centroid, MMD with 200
permutations on a 1,000-row subsample of each window, per-dimension Wasserstein on 10,000 rows,
KS on both lengths) in CPU seconds (``time.process_time``: every thread's CPU, BLAS included)
and, beside it in the same run, the baseline of the cheapest report possible: the centroid
distance alone. The windows are clustered unit vectors, as embeddings are (the current window
with a fifth of its rows from other clusters), so MMD and Wasserstein do real work. Also prints
the wall time and the decoding of 50,000 stored samples' bytes into arrays
(:meth:`WindowData.of`), which a report from the store adds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from genspool.config import DriftThresholds
from genspool.core.roles import DriftSample
from genspool.drift.report import WindowData, compare
from genspool.drift.stats import centroid_distance

TARGET_CPU_S = 2.0


def clustered(rng: np.random.Generator, rows: int, dims: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), rows)
    x = centres[picks] + 0.35 * rng.standard_normal((rows, dims), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def windows(rows: int, dims: int, seed: int) -> tuple[WindowData, WindowData]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((24, dims), dtype=np.float32) / np.sqrt(dims)
    base = clustered(rng, rows, dims, centres[:16])
    cur = np.concatenate([clustered(rng, rows - rows // 5, dims, centres[:16]),
                          clustered(rng, rows // 5, dims, centres[16:])])  # fmt: skip

    def lengths(mean: float) -> np.ndarray:
        return rng.poisson(mean, rows).astype(np.int64)

    return (
        WindowData(base, lengths(300), lengths(900)),
        WindowData(cur, lengths(300), lengths(960)),
    )


def cpu(fn: object) -> tuple[float, float]:
    """CPU and wall seconds of one call."""
    c, w = time.process_time(), time.perf_counter()
    fn()  # type: ignore[operator]
    return time.process_time() - c, time.perf_counter() - w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    base, cur = windows(args.rows, args.dims, args.seed)
    t = DriftThresholds()
    reports, baselines, walls = [], [], []
    for _ in range(args.runs):  # interleaved, so the machine's load falls on both alike
        c, w = cpu(lambda: compare(base, cur, t))
        reports.append(c)
        walls.append(w)
        baselines.append(cpu(lambda: centroid_distance(base.embeddings, cur.embeddings))[0])
    methods = compare(base, cur, t)
    blobs = [
        DriftSample(str(i), "m", 0.0, 1, 1, "e", v.tobytes()) for i, v in enumerate(base.embeddings)
    ]
    decode = cpu(lambda: WindowData.of(blobs))[0]
    report, baseline = statistics.median(reports), statistics.median(baselines)
    print(f"drift report, 2 x {args.rows:,} x {args.dims}, median of {args.runs} runs")
    for m in methods:
        verdict = "DRIFT" if m.flagged else "ok"
        print(f"  {m.name:16} {m.value:10.4g}  threshold {m.threshold:<6g} {verdict}")
    print(
        f"report CPU          {report:7.3f} s   (wall {statistics.median(walls):.3f} s)"
        f"   target <= {TARGET_CPU_S} s: {'MET' if report <= TARGET_CPU_S else 'MISSED'}"
    )
    print(
        f"baseline: centroid  {baseline:7.3f} s CPU   report / centroid = {report / baseline:.0f}x"
    )
    print(f"decoding {args.rows:,} stored samples: {decode:.3f} s CPU")


if __name__ == "__main__":
    main()
