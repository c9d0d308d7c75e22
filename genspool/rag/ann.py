"""An approximate (HNSW, usearch) index over a collection's vectors: a cache, never the truth.

Above some tens of thousands of rows an unfiltered top-10 costs a full pass over the matrix;
an HNSW graph answers it in a fraction of that. The graph is only ever built *from* the exact
matrix (:meth:`genspool.rag.exact.Collection.build_ann`), kept in step with its appends and
removals, and checked against exact search when built; filtered queries never use it, since a
graph walk with a filter is what returns fewer than k results. Deleting it loses nothing.

usearch is optional (``pip install 'genspool[ann]'``); it is imported when an index is made,
and never before onnxruntime (:func:`_import_usearch`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from numpy.typing import NDArray

from genspool.exceptions import ConfigError

__all__ = ["AnnIndex", "ann_available"]


def ann_available() -> bool:
    """Whether usearch is installed here (it is not imported: see :func:`_import_usearch`)."""
    return importlib.util.find_spec("usearch") is not None


def _import_usearch() -> Any:
    """usearch's ``Index``, with onnxruntime (the bundled embedder's runtime) imported first
    when it is installed. usearch 2.26's extension, loaded first, makes the later import of
    onnxruntime 1.32's crash the process (SIGSEGV in ``std::codecvt<char16_t>::do_unshift``
    under ``onnxruntime_pybind11_state``: ``python -c "import usearch.index; import
    onnxruntime"``); in the other order both work. So a process that builds an ANN index
    before it embeds anything does not die when it first embeds."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime  # noqa: F401

    from usearch.index import Index

    return Index


class AnnIndex:
    """Cosine HNSW over float32 unit vectors, keyed by ``uint64`` (a collection's serials).

    ``connectivity`` and ``expansion_add`` shape the graph (more: better recall, slower
    build); ``expansion_search`` is the search beam, raised by the collection until a built
    index meets its recall check."""

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = 16,
        expansion_add: int = 64,
        expansion_search: int = 64,
    ) -> None:
        try:
            Index = _import_usearch()
        except ImportError as exc:
            raise ConfigError("an ANN index needs usearch: pip install 'genspool[ann]'") from exc
        self.dim = dim
        self._index: Any = Index(
            ndim=dim,
            metric="cos",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )

    def __len__(self) -> int:
        return int(self._index.size)

    @property
    def expansion_search(self) -> int:
        return int(self._index.expansion_search)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self._index.expansion_search = value

    def add(self, keys: NDArray[np.uint64], vectors: NDArray[np.float32]) -> None:
        if len(keys):
            self._index.add(keys, vectors)

    def remove(self, keys: NDArray[np.uint64]) -> None:
        if len(keys):
            self._index.remove(keys)

    def search(
        self, queries: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]:
        """For each query, up to ``k`` keys, their cosine similarities, and how many were
        found (the rest of each row is padding)."""
        found = self._index.search(queries, count=k)
        keys = np.asarray(found.keys, dtype=np.uint64).reshape(len(queries), -1)
        distances = np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
        # usearch answers one query with a Matches (no counts), a batch with BatchMatches
        counts = np.asarray(getattr(found, "counts", [len(found.keys)]), dtype=np.int64)
        return keys, 1.0 - distances, counts
