"""Search a vector store: embed the query through the queue, rank the store's current chunks
exactly, and read the chunks found.

Each process keeps a store's current vectors as one matrix
(:class:`~genspool.rag.exact.Collection`), loaded once and loaded again when the store's chunk
revision moved (any process's flip or drop moves it). The filter is applied before ranking, so
a search returns ``k`` results whenever ``k`` chunks match.

Queries that arrive together are ranked together: the searches of one store waiting in the
same turn of the event loop, with the same filter and threshold, are one ``(q, d) @ (d, rows)``
matrix product (the way the worker batches embedding jobs), which costs about what one query
does (``bench/search.py``: a batch of 32 is ~9x cheaper per query).

Used by the vector-store routes (:class:`~genspool.rag.service.VectorStores`) and by answer
jobs (:mod:`genspool.rag.answer`), which run in workers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from genspool.core.filters import parse_filter
from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore, FileStore
from genspool.core.vectors import Chunk, VectorStore
from genspool.exceptions import InvalidRequest
from genspool.rag.embedder import Embedder
from genspool.rag.exact import Collection

__all__ = ["MAX_RESULTS", "Hit", "Searcher"]

#: The most results one search returns (OpenAI's cap is 50; genspool has none but this bound
#: on one answer's size).
MAX_RESULTS = 10_000
#: Vectors read per page when a collection is loaded.
LOAD_PAGE = 2000


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float
    filename: str


@dataclass(slots=True)
class _Round:
    """Searches of one store, filter and threshold that arrived in the same loop turn."""

    queries: list[np.ndarray[Any, Any]] = field(default_factory=list)
    ks: list[int] = field(default_factory=list)
    done: asyncio.Future[list[list[tuple[str, float]]]] | None = None


class Searcher:
    """``files``: where a chunk's file name is read (None: the file id stands for it)."""

    def __init__(self, chunks: ChunkStore, files: FileStore | None, queue: Queue) -> None:
        self.chunks, self.files, self.queue = chunks, files, queue
        self._loaded: dict[str, tuple[int, Collection]] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._rounds: dict[tuple[str, str, float | None], _Round] = {}
        #: Matrix products run, and queries ranked (a product ranks one or more).
        self.products = 0
        self.queries = 0
        #: Searches the store ran itself (pgvector).
        self.delegated = 0

    async def search(
        self,
        store: VectorStore,
        query: str | list[str],
        *,
        k: int = 10,
        filters: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        priority: int = 10,
    ) -> list[Hit]:
        """The ``k`` chunks of ``store`` closest to ``query`` among those ``filters``
        matches, best first (fewer only when fewer match)."""
        if not 1 <= k <= MAX_RESULTS:
            raise InvalidRequest(f"max_num_results: 1 to {MAX_RESULTS}", param="max_num_results")
        flt = None if filters is None else parse_filter(filters, "filters")  # 400s first
        text = " ".join(query) if isinstance(query, list) else query
        if not text.strip():
            raise InvalidRequest("query: give the text to search for", param="query")
        if store.dimensions is None:
            return []  # nothing embedded yet
        embedder = Embedder(self.queue, self.chunks, store.model, store.dimensions,
                            tenant=store.tenant, priority=priority)  # fmt: skip
        (vector,) = await embedder.embed([text])
        found = await self.chunks.chunks_nearest(store.id, store.dimensions, vector, k, flt)
        if found is not None:  # the store searched itself (pgvector)
            pairs = [(f"{f}:{s}", score) for f, s, score in found]
            if score_threshold is not None:
                pairs = [p for p in pairs if p[1] >= score_threshold]
            self.delegated += 1
        else:
            collection = await self.collection(store)
            if not len(collection):
                return []
            pairs = await self._ranked(store.id, collection, vector, k, filters, score_threshold)
        return await self._hits(store, [cid for cid, _ in pairs], [score for _, score in pairs])

    async def _hits(self, store: VectorStore, ids: list[str], scores: list[float]) -> list[Hit]:
        keys = [(cid.rpartition(":")[0], int(cid.rpartition(":")[2])) for cid in ids]
        chunks = {(c.file_id, c.seq): c for c in await self.chunks.chunks_get(store.id, keys)}
        names = await self.filenames({f for f, _ in keys}, store.tenant)
        return [
            Hit(chunks[key], score, names.get(key[0], key[0]))
            for key, score in zip(keys, scores, strict=True)
            if key in chunks
        ]

    async def _ranked(
        self,
        store_id: str,
        collection: Collection,
        vector: bytes,
        k: int,
        filters: dict[str, Any] | None,
        threshold: float | None,
    ) -> list[tuple[str, float]]:
        key = (store_id, orjson.dumps(filters, option=orjson.OPT_SORT_KEYS).decode(), threshold)
        joined = self._rounds.get(key)
        if joined is None:
            joined = self._rounds[key] = _Round()
            joined.done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._rank, key, collection, filters, threshold)
        mine = len(joined.queries)
        joined.queries.append(np.frombuffer(vector, dtype="<f4"))
        joined.ks.append(k)
        assert joined.done is not None
        rows = await asyncio.shield(joined.done)
        return rows[mine]

    def _rank(
        self,
        key: tuple[str, str, float | None],
        collection: Collection,
        filters: dict[str, Any] | None,
        threshold: float | None,
    ) -> None:
        ready = self._rounds.pop(key)
        assert ready.done is not None
        try:
            flt = None if filters is None else parse_filter(filters, "filters")
            found = collection.search(np.stack(ready.queries), max(ready.ks), flt, threshold)
        except Exception as exc:  # given to every search of the round
            ready.done.set_exception(exc)
            return
        self.products += 1
        self.queries += len(ready.queries)
        ready.done.set_result([row[:k] for row, k in zip(found, ready.ks, strict=True)])

    async def filenames(self, file_ids: set[str], tenant: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.files is None:
            return out
        for file_id in file_ids:
            found = await self.files.file_get(file_id, tenant)
            if found is not None:
                out[file_id] = found.filename
        return out

    async def collection(self, store: VectorStore) -> Collection:
        """The store's current vectors, loaded again when its revision moved."""
        assert store.dimensions is not None
        revision = await self.chunks.chunks_revision(store.id)
        held = self._loaded.get(store.id)
        if held is not None and held[0] == revision:
            return held[1]
        async with self._loading.setdefault(store.id, asyncio.Lock()):
            held = self._loaded.get(store.id)
            if held is not None and held[0] == revision:
                return held[1]
            collection = Collection(store.dimensions)
            after: tuple[str, int] | None = None
            while True:
                page = await self.chunks.chunks_current(store.id, after, LOAD_PAGE)
                if page:
                    vectors = np.frombuffer(b"".join(c.vector for c in page), dtype="<f4")
                    collection.add(
                        [f"{c.file_id}:{c.seq}" for c in page],
                        vectors.reshape(len(page), store.dimensions),
                        [c.attributes for c in page],
                    )
                if len(page) < LOAD_PAGE:
                    break
                after = (page[-1].file_id, page[-1].seq)
            self._loaded[store.id] = (revision, collection)
            return collection

    def forget(self, store_id: str) -> None:
        """Drop a deleted store's matrix."""
        self._loaded.pop(store_id, None)
        self._loading.pop(store_id, None)
