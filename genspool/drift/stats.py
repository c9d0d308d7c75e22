"""The statistics of a drift report, in numpy alone: how far one window of samples has moved
from another.

* :func:`centroid_distance`: the cosine distance between the two windows' mean embeddings; one
  number, cheap, blind to a change that keeps the mean (a second topic mixed in evenly).
* :func:`mmd`: the maximum mean discrepancy under an RBF kernel (bandwidth by the median
  heuristic), the unbiased estimator, with a permutation p-value: it sees any change of the
  distribution, a minority topic included. The kernel matrix is quadratic in the sample, so each
  window is subsampled to ``cap`` first; every permutation is scored by one matrix product.
* :func:`wasserstein_share`: the 1-D Wasserstein distance of every dimension (exact between the
  empirical distributions, normalised by the baseline's spread) and the share of dimensions
  past a threshold, as a count of drifted features.
* :func:`ks_2samp`: the two-sample Kolmogorov-Smirnov statistic (exact) of two length
  distributions, and its p-value by the asymptotic Kolmogorov distribution.

Nothing here is new science; what matters is that it runs offline with no heavy framework, and
within ``bench/drift.py``'s budget (2 x 50,000 x 384 in <= 2 s of CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "KSResult",
    "MMDResult",
    "WassersteinResult",
    "centroid_distance",
    "kolmogorov_sf",
    "ks_2samp",
    "mmd",
    "wasserstein_1d",
    "wasserstein_share",
]

Array = npt.NDArray[np.floating]
#: Rows of each window the MMD kernel is computed on: 1,000 + 1,000 rows is a 2,000² kernel,
#: about 0.1 s of CPU with 200 permutations.
MMD_CAP = 1_000
#: Rows of each window the per-dimension Wasserstein distances sort: sorting 50,000 x 384
#: takes ~0.75 s of CPU, 10,000 x 384 a fifth of that, for distances within ~1 % of the full.
WASSERSTEIN_CAP = 10_000


@dataclass(frozen=True, slots=True)
class MMDResult:
    mmd2: float  # the unbiased estimate of MMD² (may be slightly negative under no change)
    p_value: float
    bandwidth: float  # s of the RBF kernel exp(-d² / 2s²)
    permutations: int
    rows: tuple[int, int]  # the rows of each window used (after subsampling)


@dataclass(frozen=True, slots=True)
class WassersteinResult:
    share: float  # of dimensions whose normalised distance is past ``threshold``
    threshold: float
    mean: float  # of the normalised distances
    max: float
    distances: Array  # the normalised distance of each dimension


@dataclass(frozen=True, slots=True)
class KSResult:
    statistic: float
    p_value: float
    sizes: tuple[int, int]


def _rows(x: Array, cap: int, rng: np.random.Generator) -> Array:
    """At most ``cap`` rows of ``x``, drawn without replacement (all of them when fewer)."""
    if len(x) <= cap:
        return x
    return x[np.sort(rng.choice(len(x), size=cap, replace=False))]


def centroid_distance(a: Array, b: Array) -> float:
    """``1 - cos(mean(a), mean(b))``: 0 for the same direction, up to 2 for opposite ones."""
    ca, cb = a.mean(axis=0, dtype=np.float64), b.mean(axis=0, dtype=np.float64)
    norms = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return 0.0 if norms == 0.0 else float(1.0 - ca @ cb / norms)


def _sq_dists(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    sq = np.einsum("ij,ij->i", z, z)
    d = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d, 0.0, out=d)  # rounding leaves tiny negatives
    return np.asarray(d, dtype=np.float64)


def _mmd2(
    k: npt.NDArray[np.float64], labels: npt.NDArray[np.float64], n: int, m: int
) -> npt.NDArray[np.float64]:
    """The unbiased MMD² of each row of ``labels`` (1: in the first window, 0: the second),
    all from one product with the kernel matrix. RBF kernels are 1 on the diagonal, which the
    unbiased estimator leaves out: hence the ``- n`` and ``- m``."""
    ak = labels @ k  # (P, N): each point's kernel sum over the first window
    col = k.sum(axis=0)
    sum_xx = np.einsum("pj,pj->p", ak, labels)
    sum_x_all = ak.sum(axis=1)  # sum over x in A, y in all of k(x, y)
    sum_xy = sum_x_all - sum_xx
    sum_yy = col.sum() - 2.0 * sum_x_all + sum_xx
    out = (sum_xx - n) / (n * (n - 1)) + (sum_yy - m) / (m * (m - 1)) - 2.0 * sum_xy / (n * m)
    return np.asarray(out, dtype=np.float64)


def mmd(
    a: Array,
    b: Array,
    *,
    permutations: int = 200,
    cap: int = MMD_CAP,
    seed: int = 0,
) -> MMDResult:
    """MMD between two windows of vectors (rows), with a permutation p-value: the share of
    relabellings of the pooled rows scoring at least the observed MMD², counted as
    ``(1 + hits) / (1 + permutations)`` so it is never 0."""
    rng = np.random.default_rng(seed)
    x, y = _rows(a, cap, rng), _rows(b, cap, rng)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 rows in each window, not {n} and {m}")
    z = np.concatenate([x, y]).astype(np.float64)
    d = _sq_dists(z)
    median = float(np.median(d[np.triu_indices(n + m, k=1)]))
    sigma2 = median / 2.0 if median > 0 else 1.0
    k = np.exp(-d / (2.0 * sigma2))
    labels = np.zeros((permutations + 1, n + m))
    labels[0, :n] = 1.0
    order = rng.permuted(np.tile(np.arange(n + m), (permutations, 1)), axis=1)
    np.put_along_axis(labels[1:], order[:, :n], 1.0, axis=1)
    scores = _mmd2(k, labels, n, m)
    hits = int(np.count_nonzero(scores[1:] >= scores[0]))
    p = (1 + hits) / (1 + permutations)
    return MMDResult(float(scores[0]), p, float(np.sqrt(sigma2)), permutations, (n, m))


def wasserstein_1d(a: Array, b: Array) -> npt.NDArray[np.float64]:
    """The exact 1-D Wasserstein-1 distance between the empirical distributions of each column
    of ``a`` and of ``b`` (any two row counts): the integral over ``q`` in (0, 1] of the gap
    between their quantile functions, which are steps at ``i/n`` and ``j/m``. The steps are the
    same for every column, so one set of indices serves all of them."""
    n, m = len(a), len(b)
    sa = np.sort(np.ascontiguousarray(a.T), axis=1)
    sb = np.sort(np.ascontiguousarray(b.T), axis=1)
    if n == m:
        return np.asarray(np.abs(sa - sb, dtype=np.float64).mean(axis=1), dtype=np.float64)
    grid = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    widths = np.diff(grid, prepend=0.0)
    mid = grid - widths / 2.0  # inside each step, never on an edge
    ia, ib = (mid * n).astype(np.intp), (mid * m).astype(np.intp)
    gaps = np.abs(sa[:, ia] - sb[:, ib], dtype=np.float64)
    return np.asarray(gaps @ widths, dtype=np.float64)


def wasserstein_share(
    a: Array,
    b: Array,
    *,
    threshold: float = 0.1,
    cap: int = WASSERSTEIN_CAP,
    seed: int = 0,
) -> WassersteinResult:
    """Each dimension's Wasserstein distance over the baseline ``a``'s standard deviation of
    it (so a distance reads in the dimension's own spread), and the share past ``threshold``."""
    rng = np.random.default_rng(seed)
    x, y = _rows(a, cap, rng), _rows(b, cap, rng)
    spread = x.std(axis=0, dtype=np.float64)
    w = wasserstein_1d(x, y) / np.where(spread > 0, spread, 1.0)
    share = float(np.count_nonzero(w > threshold)) / max(len(w), 1)
    return WassersteinResult(share, threshold, float(w.mean()), float(w.max()), w)


def kolmogorov_sf(x: float, terms: int = 100) -> float:
    """``P(K > x)`` for the Kolmogorov distribution. Its alternating series converges fast for
    large ``x`` and barely at all for small; there the Jacobi-transformed form is used."""
    if x <= 0.0:
        return 1.0
    j = np.arange(1, terms + 1, dtype=np.float64)
    if x < 1.0:
        cdf = np.sqrt(2.0 * np.pi) / x * np.exp(-((2 * j - 1) ** 2) * np.pi**2 / (8 * x * x)).sum()
        return float(min(max(1.0 - cdf, 0.0), 1.0))
    sf = 2.0 * (((-1.0) ** (j - 1)) * np.exp(-2.0 * j * j * x * x)).sum()
    return float(min(max(sf, 0.0), 1.0))


def ks_2samp(a: npt.ArrayLike, b: npt.ArrayLike) -> KSResult:
    """The two-sample KS statistic ``D = sup |F_a - F_b|`` (exact: both empirical CDFs taken at
    every observed value, ties included), with the asymptotic p-value ``Q(λ)``, where
    ``λ = (√e + 0.12 + 0.11/√e)·D`` and ``e = nm/(n+m)`` (Stephens' correction, which keeps the
    asymptotic form close for samples of tens)."""
    xa, xb = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    n, m = len(xa), len(xb)
    if n == 0 or m == 0:
        raise ValueError(f"KS needs values in both samples, not {n} and {m}")
    values = np.concatenate([xa, xb])
    fa = np.searchsorted(xa, values, side="right") / n
    fb = np.searchsorted(xb, values, side="right") / m
    d = float(np.abs(fa - fb).max())
    en = np.sqrt(n * m / (n + m))
    return KSResult(d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d), (n, m))
