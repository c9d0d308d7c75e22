"""The scaled-out vector store: chunks on a PostgreSQL with pgvector (the suite's own server,
:mod:`tests.helpers.pgvector`), searched by the database (HNSW, iterative scans) instead of in
memory. Checked against exact numpy ranking on clustered 384-d vectors, as embeddings are: recall@10
of unfiltered searches, exactly k results for a 1 %-selective filter, generations that stay
invisible until their flip, rows written before pgvector was there, and the Searcher delegating
to the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from genspool.backends import open_storage
from genspool.backends.postgres._probe import PgVectorCaps
from genspool.core.filters import parse_filter
from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore
from genspool.core.vectors import Chunk, VectorStore
from genspool.rag.search import Searcher

DIM, FILES, PER_FILE, SHARDS = 384, 10, 300, 100  # 3,000 chunks; a shard is 1 % of them


def clustered(count: int, seed: int) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    rows = centres[rng.integers(0, 40, count)] + 0.6 * rng.standard_normal((count, DIM))
    out = rows.astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


ROWS = clustered(FILES * PER_FILE + 20, seed=5)
QUERIES = ROWS[-20:]


def chunks_of(generation: int = 1, store_id: str = "vs_pg") -> list[Chunk]:
    out = []
    for n in range(FILES * PER_FILE):
        f, seq = divmod(n, PER_FILE)
        out.append(
            Chunk(store_id, f"file-{f}", generation, seq, f"text {n}", start=0, end=6, tokens=2,
                  vector=ROWS[n].astype("<f4").tobytes(), attributes={"shard": n % SHARDS})
        )  # fmt: skip
    return out


def exact(query: np.ndarray, k: int, shard: int | None = None) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    ids = [divmod(n, PER_FILE) for n in range(FILES * PER_FILE)]
    keep = np.array([shard is None or n % SHARDS == shard for n in range(FILES * PER_FILE)])
    scores = np.where(keep, ROWS[: FILES * PER_FILE] @ query, -np.inf)
    return [(f"file-{ids[i][0]}", ids[i][1]) for i in np.argsort(-scores)[:k]]


@pytest.fixture
async def queue(pgvector_url: str) -> AsyncIterator[Queue]:
    q = Queue(open_storage(f"{pgvector_url}?schema=gs_{uuid.uuid4().hex[:10]}"))
    await q.connect()
    try:
        yield q
    finally:
        try:
            await q.storage.drop()  # the test's schema
        finally:
            await q.close()


async def _loaded(chunks: ChunkStore, generation: int = 1, indexed: bool = True) -> None:
    """The chunks, current, and (``indexed``) the HNSW index of their width built: the
    first search starts its build in the background and ranks exactly meanwhile."""
    batch = chunks_of(generation)
    for start in range(0, len(batch), 500):
        await chunks.chunks_put(batch[start : start + 500])
    for f in range(FILES):
        await chunks.chunks_flip("vs_pg", f"file-{f}", generation)
    if not indexed:
        return
    pgvector = chunks._pgvector  # type: ignore[attr-defined]
    await chunks.chunks_nearest("vs_pg", DIM, QUERIES[0].astype("<f4").tobytes(), 1, None)
    async with asyncio.timeout(120):
        while not await pgvector._has_index(DIM):
            await asyncio.sleep(0.2)


async def test_the_database_ranks_as_exact_search_does(queue: Queue) -> None:
    chunks = queue.storage.chunks
    assert chunks is not None
    await _loaded(chunks)
    found_total = 0
    for q in QUERIES:
        got = await chunks.chunks_nearest("vs_pg", DIM, q.astype("<f4").tobytes(), 10, None)
        assert got is not None, "pgvector is installed here: the database must search"
        assert [s for _, _, s in got] == sorted((s for _, _, s in got), reverse=True)
        found_total += len({(f, s) for f, s, _ in got} & set(exact(q, 10)))
    assert found_total / (10 * len(QUERIES)) >= 0.95  # recall@10 of HNSW against exact


async def test_a_one_percent_filter_returns_exactly_k(queue: Queue) -> None:
    chunks = queue.storage.chunks
    assert chunks is not None
    await _loaded(chunks)
    for i, q in enumerate(QUERIES[:10]):
        flt = parse_filter({"type": "eq", "key": "shard", "value": i}, "filters")
        got = await chunks.chunks_nearest("vs_pg", DIM, q.astype("<f4").tobytes(), 10, flt)
        assert got is not None and len(got) == 10  # 30 chunks match; iterative scans find 10
        assert {(f, s) for f, s, _ in got} <= {
            (f"file-{n // PER_FILE}", n % PER_FILE)
            for n in range(FILES * PER_FILE)
            if n % SHARDS == i
        }
        assert len({(f, s) for f, s, _ in got} & set(exact(q, 10, shard=i))) >= 9


async def test_a_generation_is_searched_only_from_its_flip(queue: Queue) -> None:
    chunks = queue.storage.chunks
    assert chunks is not None
    await _loaded(chunks)
    target = chunks_of(2)[0]  # file-0 #0 at generation 2, with the vector of query 0
    pending = Chunk(**{**{f: getattr(target, f) for f in Chunk.__slots__},
                       "vector": QUERIES[0].astype("<f4").tobytes()})  # fmt: skip
    await chunks.chunks_put([pending])
    q = QUERIES[0].astype("<f4").tobytes()
    before = await chunks.chunks_nearest("vs_pg", DIM, q, 1, None)
    assert before is not None and before[0][2] < 0.999  # generation 2 is not searched yet
    await chunks.chunks_flip("vs_pg", "file-0", 2)
    after = await chunks.chunks_nearest("vs_pg", DIM, q, 1, None)
    assert after is not None and after[0][:2] == ("file-0", 0) and after[0][2] > 0.999


async def test_rows_written_before_pgvector_are_filled_in_by_the_first_search(
    queue: Queue, pgvector_url: str
) -> None:
    chunks = queue.storage.chunks
    assert chunks is not None
    # This process writes as if the server had no pgvector (a probe that found none).
    chunks._pgvector.caps = PgVectorCaps(available=False, installed=False)  # type: ignore[attr-defined]
    await _loaded(chunks, indexed=False)
    assert await chunks.chunks_nearest("vs_pg", DIM, QUERIES[0].tobytes(), 3, None) is None
    await chunks._pgvector.aclose()  # type: ignore[attr-defined]
    chunks._pgvector_of = None  # type: ignore[attr-defined]  # a process started later
    query = QUERIES[0].astype("<f4").tobytes()
    # Until every row has its embedding (filled in the background), the caller ranks.
    got = await chunks.chunks_nearest("vs_pg", DIM, query, 10, None)
    async with asyncio.timeout(120):
        while got is None:
            await asyncio.sleep(0.2)
            got = await chunks.chunks_nearest("vs_pg", DIM, query, 10, None)
    assert len(got) == 10
    assert {(f, s) for f, s, _ in got} == set(exact(QUERIES[0], 10))


async def test_the_searcher_lets_the_database_rank(queue: Queue) -> None:
    chunks = queue.storage.chunks
    assert chunks is not None
    await _loaded(chunks)
    searcher = Searcher(chunks, None, queue)
    store = VectorStore("vs_pg", "acme", created_at=0.0, model="emb", dimensions=DIM)
    # The query's vector is cached under its text, so no embedding model is called.
    from genspool.rag.embedder import text_key

    await chunks.cache_put("emb", DIM, {text_key("query"): QUERIES[1].astype("<f4").tobytes()})
    flt = {"type": "eq", "key": "shard", "value": 7}
    hits = await searcher.search(store, "query", k=10, filters=flt)
    assert searcher.delegated == 1 and searcher.products == 0
    assert len(hits) == 10 and all(h.chunk.attributes["shard"] == 7 for h in hits)
