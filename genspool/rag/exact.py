"""Exact cosine search over one collection's vectors, kept as a matrix in memory.

The embedded vector store keeps its vectors as rows in SQLite (the stdlib driver cannot load
sqlite-vec) and searches them here: a float32 matrix of L2-normalised rows, their ids, and
their attributes as columns (:class:`~genspool.core.columns.AttributeColumns`). A search

1. applies the filter FIRST, as a boolean mask over the attribute columns, so a filtered
   search returns k results whenever k rows match (a top-k-then-filter search, or an ANN walk
   with a filter, returns fewer: asg017/sqlite-vec#152);
2. scores the queries against the matching rows in one matrix product (a batch of queries is
   one ``(q, d) @ (d, rows)`` product, which is why the worker batches them);
3. takes each query's top k with ``np.argpartition`` and sorts only those; k has no cap,
   and a k above the number of matches returns every match.

Measured on 100k x 384 (``bench/search.py``, 2 busy cores): with a 1 % filter, gathering the
matching rows and multiplying only those has a p50 of ~2 ms (0.5 ms on an idle machine)
against ~30 ms for scoring every row and masking after; copying the gathered rows costs more
than it saves from about 15 % selectivity on (10 %: 30 against 37 ms; 30 %: 86 against
40 ms), so below ``gather_below`` the rows are gathered, above it every row is scored and the
rest masked.

Removal marks rows dead (tombstones) and compacts the arrays in one pass once dead rows pass
``compact_above`` of the matrix, so a removal is O(1) and its cost is amortised.

Above ``ann_threshold`` rows an unfiltered search may use an HNSW index
(:class:`~genspool.rag.ann.AnnIndex`), built from this matrix by :meth:`Collection.build_ann`
and checked against exact search when built; the matrix stays the truth.

A collection is not thread-safe: one owner (the search worker) mutates and searches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from genspool.core.columns import AttributeColumns, Attributes, AttributeValue
from genspool.core.filters import Filter, mask, parse_filter
from genspool.rag.ann import AnnIndex, ann_available

__all__ = ["Collection", "Hit", "unit_rows"]

#: One result: the row's id and its cosine similarity with the query.
Hit: TypeAlias = tuple[str, float]

#: The largest score matrix computed at once (float32 cells, 64 MB): a larger batch of queries
#: is cut into slices, so memory does not grow with the batch.
_MAX_CELLS = 1 << 24

_A = TypeVar("_A", NDArray[np.float32], NDArray[np.object_], NDArray[np.uint64], NDArray[np.bool_])


def unit_rows(vectors: ArrayLike, dim: int) -> NDArray[np.float32]:
    """``vectors`` as a float32 ``(n, dim)`` array of L2-normalised rows (a zero row stays
    zero, and scores 0 with everything)."""
    rows = np.array(vectors, dtype=np.float32, ndmin=2)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ValueError(f"expected vectors of {dim} dimensions, got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    rows /= norms
    return rows


class Collection:
    """The vectors, ids and attributes of one collection, searched exactly."""

    def __init__(
        self,
        dim: int,
        *,
        ann_threshold: int | None = 50_000,
        gather_below: float = 0.15,
        compact_above: float = 0.25,
    ) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.gather_below = gather_below
        self.compact_above = compact_above
        self.attributes = AttributeColumns()
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._ids: NDArray[np.object_] = np.empty(0, dtype=object)
        self._serials = np.empty(0, dtype=np.uint64)  # stable keys for the ANN index
        self._alive = np.empty(0, dtype=bool)
        self._rows: dict[str, int] = {}
        self._n = 0  # rows used, dead ones included
        self._next_serial = 0
        self._ann: AnnIndex | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, id: object) -> bool:
        return id in self._rows

    @property
    def ann(self) -> AnnIndex | None:
        """The ANN index, when one is built."""
        return self._ann

    # -- writes ---------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        vectors: ArrayLike,
        attributes: Sequence[Attributes | None] | None = None,
    ) -> None:
        """Add rows; an id already present is replaced (its old row removed)."""
        if not ids:
            return
        rows = unit_rows(vectors, self.dim)
        if len(rows) != len(ids) or (attributes is not None and len(attributes) != len(ids)):
            raise ValueError("ids, vectors and attributes must have the same length")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique within one add")
        self.remove([i for i in ids if i in self._rows])
        start, stop = self._n, self._n + len(ids)
        self._reserve(stop)
        self._vectors[start:stop] = rows
        self._ids[start:stop] = list(ids)
        serials = np.arange(self._next_serial, self._next_serial + len(ids), dtype=np.uint64)
        self._serials[start:stop] = serials
        self._alive[start:stop] = True
        self.attributes.append(attributes if attributes is not None else [None] * len(ids))
        self._rows.update(zip(ids, range(start, stop), strict=True))
        self._n, self._next_serial = stop, self._next_serial + len(ids)
        if self._ann is not None:
            self._ann.add(serials, rows)

    def remove(self, ids: Iterable[str]) -> int:
        """Remove rows by id (unknown ids are ignored); returns how many were removed."""
        rows = np.array([self._rows.pop(i) for i in ids if i in self._rows], dtype=np.int64)
        self._alive[rows] = False
        if self._ann is not None:
            self._ann.remove(self._serials[rows])
        if self._n - len(self._rows) > max(1024, self.compact_above * self._n):
            self.compact()
        return len(rows)

    def set_attributes(self, id: str, attributes: Attributes | None) -> None:
        """Replace one row's attributes."""
        self.attributes.set(self._rows[id], attributes)

    def attributes_of(self, id: str) -> dict[str, AttributeValue]:
        return self.attributes.row(self._rows[id])

    def compact(self) -> None:
        """Drop dead rows from every array, keeping the order (and so the ANN's keys)."""
        keep = self._alive[: self._n].copy()  # a view would change under the writes below
        live = int(np.count_nonzero(keep))
        self._vectors[:live] = self._vectors[: self._n][keep]
        self._ids[:live] = self._ids[: self._n][keep]
        self._ids[live : self._n] = None
        self._serials[:live] = self._serials[: self._n][keep]
        self._alive[:live], self._alive[live : self._n] = True, False
        self.attributes.take(keep)
        self._n = live
        self._rows = {id: row for row, id in enumerate(self._ids[:live].tolist())}

    def _reserve(self, rows: int) -> None:
        capacity = len(self._alive)
        if rows <= capacity:
            return
        capacity = max(rows, capacity * 3 // 2, 1024)
        self._vectors = _grow(self._vectors, capacity)
        self._ids = _grow(self._ids, capacity)
        self._serials = _grow(self._serials, capacity)
        self._alive = _grow(self._alive, capacity)

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        queries: ArrayLike,
        k: int,
        flt: Filter | Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        *,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Each query's best ``k`` rows among those ``flt`` matches, best first, as
        ``(id, cosine similarity)``; rows scoring below ``score_threshold`` are left out.

        ``queries`` is one vector or a ``(q, dim)`` batch (scored in one matrix product);
        without a filter, and unless ``exact``, a built ANN index may answer instead."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        matrix = unit_rows(queries, self.dim)
        if self._ann is not None and flt is None and not exact and k <= 256:
            hits = self._search_ann(matrix, k)
        else:
            hits = self._search_exact(matrix, k, self._candidates(flt))
        if score_threshold is not None:
            hits = [[h for h in row if h[1] >= score_threshold] for row in hits]
        return hits

    def _candidates(self, flt: Filter | Mapping[str, Any] | None) -> NDArray[np.bool_]:
        """The rows a search may return: alive, and matching the filter."""
        alive = self._alive[: self._n]
        if flt is None:
            return alive
        if isinstance(flt, Mapping):
            flt = parse_filter(flt)
        return alive & mask(flt, self.attributes)

    def _search_exact(
        self, queries: NDArray[np.float32], k: int, rows: NDArray[np.bool_]
    ) -> list[list[Hit]]:
        matches = int(np.count_nonzero(rows))
        if matches == 0:
            return [[] for _ in queries]
        if matches <= self.gather_below * self._n:
            index: NDArray[np.intp] = np.flatnonzero(rows)
            vectors, excluded = self._vectors[index], None
        else:
            index = np.arange(self._n)
            vectors, excluded = self._vectors[: self._n], (~rows if matches < self._n else None)
        step = max(1, _MAX_CELLS // len(index))
        hits: list[list[Hit]] = []
        for start in range(0, len(queries), step):
            scores = queries[start : start + step] @ vectors.T
            if excluded is not None:
                scores[:, excluded] = -np.inf
            hits.extend(self._hits(scores, index, min(k, matches)))
        return hits

    def _hits(
        self, scores: NDArray[np.float32], index: NDArray[np.intp], k: int
    ) -> list[list[Hit]]:
        """Each row of ``scores``' top ``k`` (``k`` at most its finite entries), as hits."""
        out = []
        for row in scores:
            top = _top_k(row, k)
            ids = self._ids[index[top]].tolist()
            out.append(list(zip(ids, row[top].tolist(), strict=True)))
        return out

    def _search_ann(self, queries: NDArray[np.float32], k: int) -> list[list[Hit]]:
        assert self._ann is not None
        keys, scores, counts = self._ann.search(queries, k)
        serials = self._serials[: self._n]
        hits = []
        for keys_row, scores_row, count in zip(keys, scores, counts, strict=True):
            rows = np.searchsorted(serials, keys_row[:count])
            ok = rows < self._n
            ok[ok] &= serials[rows[ok]] == keys_row[:count][ok]
            ok[ok] &= self._alive[rows[ok]]
            ids = self._ids[rows[ok]].tolist()
            hits.append(list(zip(ids, scores_row[:count][ok].tolist(), strict=True)))
        return hits

    # -- the ANN cache --------------------------------------------------------------------

    def refresh_ann(self) -> float | None:
        """Build the ANN index if the collection has grown past ``ann_threshold`` and usearch
        is installed (a slow call, seconds per 100k rows: run it off the search path);
        returns the recall it measured, or None when none was built."""
        wanted = self.ann_threshold is not None and len(self) >= self.ann_threshold
        if self._ann is not None or not wanted or not ann_available():
            return None
        return self.build_ann()

    def build_ann(
        self, *, min_recall: float = 0.95, probes: int = 64, k: int = 10, seed: int = 0
    ) -> float:
        """(Re)build the ANN index from the live rows and check it against exact search on
        ``probes`` queries (stored rows, perturbed), widening its search beam until its
        recall@k reaches ``min_recall``; an index that cannot is dropped, and searches stay
        exact. Returns the recall measured."""
        self._ann = None
        live = np.flatnonzero(self._alive[: self._n])
        index = AnnIndex(self.dim)
        index.add(self._serials[live], self._vectors[live])
        queries = self._probes(live, probes, np.random.default_rng(seed))
        truth = self._search_exact(queries, k, self._alive[: self._n])
        recall = 0.0
        for beam in (64, 128, 256, 512):
            index.expansion_search = beam
            self._ann = index
            recall = _recall(self._search_ann(queries, k), truth)
            if recall >= min_recall:
                return recall
        self._ann = None
        return recall

    def drop_ann(self) -> None:
        self._ann = None

    def _probes(
        self, live: NDArray[np.intp], count: int, rng: np.random.Generator
    ) -> NDArray[np.float32]:
        picked = self._vectors[rng.choice(live, size=min(count, len(live)), replace=False)]
        noise = rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(self.dim)
        return unit_rows(picked + noise, self.dim)


def _top_k(scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Positions of the ``k`` largest scores, largest first: a partition, then a sort of k."""
    if k < len(scores):
        part = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]


def _recall(found: list[list[Hit]], truth: list[list[Hit]]) -> float:
    """The share of the exact results that ``found`` also returned."""
    wanted = sum(len(t) for t in truth)
    got = sum(len({h[0] for h in f} & {h[0] for h in t}) for f, t in zip(found, truth, strict=True))
    return got / wanted if wanted else 1.0


def _grow(array: _A, capacity: int) -> _A:
    out = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out
