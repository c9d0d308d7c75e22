"""pgvector on the PostgreSQL the suite bundles (:mod:`tests.helpers.pgvector`), measured on the
shape of a genspool vector store: 20,000 random unit vectors of 384 dimensions (the bundled
MiniLM's width) under an HNSW index (cosine), queried for k=10 with a filter on an attribute
that keeps 1 % of the rows, as an OpenAI ``attribute_filter`` would.

The planner is kept off the sequential scan (``enable_seqscan = off``) so that every filtered
query goes through the index, the case iterative scans are for; the exact answer is the same
query with index scans off (a sequential scan and a sort).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from numpy.typing import NDArray
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection

from genspool.backends.postgres._probe import capabilities

pytestmark = pytest.mark.asyncio(loop_scope="module")

DIM, ROWS, KINDS, K, QUERIES = 384, 20_000, 100, 10, 30
TABLE = "pgvector_probe_items"
FILTERED = f"SELECT id FROM {TABLE} WHERE attr = %s ORDER BY embedding <=> %s LIMIT {K}"

Conn = AsyncConnection[Any]


def _unit_vectors(count: int, seed: int) -> NDArray[np.float32]:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    unit: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


QUERY_VECTORS = _unit_vectors(QUERIES, seed=2)


async def _connect(url: str, **kwargs: Any) -> Conn:
    conn: Conn = await AsyncConnection.connect(url, autocommit=True, **kwargs)
    return conn


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def items_url(pgvector_url: str) -> AsyncIterator[str]:
    """The table, loaded by binary COPY and indexed once for the module."""
    async with await _connect(pgvector_url) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await register_vector_async(conn)
        await conn.execute(
            f"CREATE TABLE {TABLE} (id int PRIMARY KEY, attr int NOT NULL,"
            f" embedding vector({DIM}) NOT NULL)"
        )
        async with conn.cursor() as cur:
            copy_sql = f"COPY {TABLE} (id, attr, embedding) FROM STDIN WITH (FORMAT BINARY)"
            async with cur.copy(copy_sql) as copy:
                copy.set_types(["int4", "int4", "vector"])
                for i, vector in enumerate(_unit_vectors(ROWS, seed=1)):
                    await copy.write_row((i, i % KINDS, vector))
        await conn.execute("SET maintenance_work_mem = '256MB'")  # the graph fits: a fast build
        await conn.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops)")
        await conn.execute(f"ANALYZE {TABLE}")
        yield pgvector_url
        await conn.execute(f"DROP TABLE {TABLE}")


@pytest_asyncio.fixture(loop_scope="module")
async def conn(items_url: str) -> AsyncIterator[Conn]:
    async with await _connect(items_url) as conn:
        await register_vector_async(conn)
        await conn.execute("SET enable_seqscan = off")
        yield conn


async def _filtered(conn: Conn, query: int) -> list[int]:
    cur = await conn.execute(FILTERED, (query % KINDS, QUERY_VECTORS[query]))
    return [row[0] for row in await cur.fetchall()]


async def _all_filtered(conn: Conn, *settings: str) -> list[list[int]]:
    for setting in settings:
        await conn.execute(f"SET {setting}")
    return [await _filtered(conn, q) for q in range(QUERIES)]


async def test_the_bundled_pgvector_has_what_stores_need(conn: Conn) -> None:
    caps = await capabilities(conn)
    assert caps.available and caps.installed and caps.hnsw and caps.iterative_scan, caps
    assert caps.version >= (0, 8), caps


async def test_capabilities_of_a_database_without_the_extension(pgvector_url: str) -> None:
    name = f"bare_{uuid.uuid4().hex[:12]}"
    async with await _connect(pgvector_url) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            async with await _connect(pgvector_url, dbname=name) as conn:
                caps = await capabilities(conn)
        finally:
            await admin.execute(f"DROP DATABASE {name}")
    assert caps.available and not caps.installed and caps.version == (), caps


async def test_filtered_queries_go_through_the_hnsw_index(conn: Conn) -> None:
    cur = await conn.execute(f"EXPLAIN {FILTERED}", (0, QUERY_VECTORS[0]))
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Index Scan using" in plan and "embedding_idx" in plan, plan


async def test_iterative_scan_returns_k_rows_where_a_plain_scan_returns_fewer(conn: Conn) -> None:
    plain = await _all_filtered(conn, "hnsw.iterative_scan = off")
    iterative = await _all_filtered(conn, "hnsw.iterative_scan = relaxed_order")
    counts = [len(ids) for ids in plain]
    print(f"\nk={K} at 1 %: without iterative scan {statistics.mean(counts):.2f} rows on average")
    assert all(len(ids) == K for ids in iterative)
    assert statistics.mean(counts) < K  # ef_search=40 candidates, of which ~1 % pass the filter


async def test_recall_of_filtered_queries_against_an_exact_search(conn: Conn) -> None:
    found = await _all_filtered(conn, "hnsw.iterative_scan = relaxed_order")
    exact = await _all_filtered(conn, "enable_indexscan = off")
    recall = statistics.mean(len(set(a) & set(e)) / K for a, e in zip(found, exact, strict=True))
    print(f"\nrecall@{K} of filtered queries (relaxed_order, ef_search=40): {recall:.3f}")
    assert recall >= 0.95


async def test_latency_of_a_filtered_query(conn: Conn) -> None:
    await _all_filtered(conn, "hnsw.iterative_scan = relaxed_order")  # warm the caches
    took = []
    for q in range(QUERIES):
        start = time.perf_counter()
        await _filtered(conn, q)
        took.append(time.perf_counter() - start)
    p50 = statistics.median(took)
    print(f"\nfiltered query p50 {p50 * 1000:.1f} ms, max {max(took) * 1000:.1f} ms")
    assert p50 < 0.5  # a loose bound on 2 shared cores: the figure printed is the measure
