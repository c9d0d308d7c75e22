"""Vector search inside PostgreSQL when the server has pgvector: the scaled-out store.

Every process of a scaled-out deployment would otherwise hold each store's whole matrix in
memory (:class:`~genspool.rag.search.Searcher`); with pgvector the database ranks instead.

* The ``bytea`` vector of each chunk stays the truth. Beside it the chunk gets an
  ``embedding`` (pgvector's ``vector``, untyped, as stores differ in width) and its ``dims``,
  written by the same statement as the chunk. Rows written before pgvector was there are
  filled in once, by the first search of their store.
* One HNSW index (cosine) per width, partial on ``dims``: ``(embedding::vector(384))``
  ``WHERE dims = 384``, made when the first chunks of that width are written.
* A search is one statement: the chunks of the store's current generations that the filter
  keeps (OpenAI's filter as SQL over the ``attributes`` JSONB,
  :func:`genspool.core.filters.to_sql`), nearest first, ``LIMIT k``. With pgvector >= 0.8 the
  HNSW scan is iterative (``hnsw.iterative_scan = relaxed_order``, the rows re-sorted after),
  so a filter that keeps 1 % of the rows still gets k rows; an older pgvector hands the filter
  only ``ef_search`` candidates and returns fewer, so a filtered search there is left to the
  exact in-process search (None), and so is any search when the extension is missing or
  cannot be created.

The extension is created ``WITH SCHEMA public`` when the server offers it and the role may; an
extension already installed is used where it is. Its types and operators are named with their
schema, since genspool's connections search only genspool's schema.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from genspool.backends.postgres._pool import Connections
from genspool.backends.postgres._probe import PgVectorCaps, capabilities
from genspool.core.filters import Filter, to_sql
from genspool.core.vectors import Chunk

__all__ = ["PgVector"]

log = logging.getLogger("genspool.backends.postgres")

#: Widths pgvector's HNSW indexes (vector: up to 2,000 dimensions).
MAX_INDEXED = 2000
CREATE = "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public"
#: Rows filled in per statement when old rows get their embeddings.
FILL_PAGE = 1000


def vector_text(vector: bytes) -> str:
    """pgvector's text form of a float32 little-endian vector."""
    values = np.frombuffer(vector, dtype="<f4")
    return "[" + ",".join(format(float(v), ".8g") for v in values) + "]"


class PgVector:
    """pgvector on one backend's database, asked once (:meth:`ready`)."""

    def __init__(self, db: Connections) -> None:
        self.db = db
        self.caps: PgVectorCaps | None = None
        self._probing = asyncio.Lock()
        self._indexed: set[int] = set()
        self._filled: set[str] = set()

    async def ready(self) -> bool:
        """Whether searches run here: pgvector installed (created now when it can be) and the
        chunks table has its columns."""
        if self.caps is None:
            async with self._probing:
                if self.caps is None:
                    self.caps = await self._probe()
        return self.caps.installed and self.caps.hnsw

    async def _probe(self) -> PgVectorCaps:
        try:
            async with self.db.conn() as conn:
                caps = await capabilities(conn)
                if caps.available and not caps.installed:
                    try:
                        await conn.execute(CREATE)
                    except psycopg.Error as exc:
                        log.warning("pgvector is available but not created (%s): exact search", exc)
                        return caps
                    caps = await capabilities(conn)
                if not caps.installed or caps.schema is None:
                    return caps
                vector = sql.Identifier(caps.schema, "vector")
                await conn.execute(
                    sql.SQL(
                        "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embedding {},"
                        " ADD COLUMN IF NOT EXISTS dims integer"
                    ).format(vector)
                )
                return caps
        except psycopg.Error as exc:  # e.g. a concurrent ALTER: the next call asks again
            log.warning("pgvector probe failed (%s): exact search for now", exc)
            return PgVectorCaps(available=False, installed=False)

    def _type(self, dims: int | None = None) -> sql.Composable:
        assert self.caps is not None and self.caps.schema is not None
        name = sql.Identifier(self.caps.schema, "vector")
        return name if dims is None else sql.SQL("{}({})").format(name, sql.Literal(dims))

    def _distance(self) -> sql.Composable:
        assert self.caps is not None and self.caps.schema is not None
        return sql.SQL("OPERATOR({}.<=>)").format(sql.Identifier(self.caps.schema))

    # -- writes -----------------------------------------------------------------------------------

    async def put(self, conn: Any, chunks: Sequence[Chunk]) -> None:
        """Give the chunks just written on ``conn`` their embeddings, in the caller's
        transaction (the rows and their embeddings commit together)."""
        rows = [(c.store_id, c.file_id, c.seq, c.generation, c.vector) for c in chunks]
        if rows:
            await conn.execute(*self._embedding(rows))

    async def indexed(self, chunks: Sequence[Chunk]) -> None:
        """Make the index of each width of ``chunks`` (once per process and width)."""
        for dims in {len(c.vector) // 4 for c in chunks}:
            await self._index(dims)

    async def _embed(self, rows: Sequence[tuple[str, str, int, int, bytes]]) -> None:
        async with self.db.conn() as conn:
            await conn.execute(*self._embedding(rows))

    def _embedding(
        self, rows: Sequence[tuple[str, str, int, int, bytes]]
    ) -> tuple[sql.Composed, list[Any]]:
        query = sql.SQL(
            "UPDATE chunks c SET embedding = v.embedding::{vector}, dims = v.dims"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[],"
            " %s::integer[]) AS v (store_id, file_id, seq, generation, embedding, dims)"
            " WHERE (c.store_id, c.file_id, c.seq, c.generation)"
            " = (v.store_id, v.file_id, v.seq, v.generation)"
        ).format(vector=self._type())
        args = [
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows], [vector_text(r[4]) for r in rows],
            [len(r[4]) // 4 for r in rows],
        ]  # fmt: skip
        return query, args

    async def _index(self, dims: int) -> None:
        if dims in self._indexed or dims > MAX_INDEXED:
            return
        assert self.caps is not None and self.caps.schema is not None
        query = sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON chunks USING hnsw"
            " ((embedding::{vector}) {ops}) WHERE dims = {dims}"
        ).format(
            name=sql.Identifier(f"chunks_hnsw_{dims}"),
            vector=self._type(dims),
            ops=sql.Identifier(self.caps.schema, "vector_cosine_ops"),
            dims=sql.Literal(dims),
        )
        try:
            async with self.db.conn() as conn:
                await conn.execute(query)
        except psycopg.errors.UniqueViolation:
            pass  # another process made it at the same moment
        self._indexed.add(dims)

    async def _fill(self, store_id: str) -> None:
        """Rows of the store written before pgvector was there get their embeddings."""
        if store_id in self._filled:
            return
        select = b"SELECT store_id, file_id, seq, generation, vector FROM chunks" \
                 b" WHERE store_id = %s AND embedding IS NULL LIMIT %s"  # fmt: skip
        while rows := await self.db.fetch(select, [store_id, FILL_PAGE]):
            await self._embed([(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows])
            for dims in {len(bytes(r[4])) // 4 for r in rows}:
                await self._index(dims)
        self._filled.add(store_id)

    # -- search ---------------------------------------------------------------------------------

    async def nearest(
        self, store_id: str, dims: int, vector: bytes, k: int, flt: Filter | None
    ) -> list[tuple[str, int, float]] | None:
        """The ``k`` current chunks of the store nearest ``vector`` among those ``flt`` keeps,
        as ``(file_id, seq, cosine similarity)``, best first; None when pgvector cannot answer
        it completely here (not installed, too wide to index, or a filter without iterative
        scans)."""
        if not await self.ready() or dims > MAX_INDEXED:
            return None
        assert self.caps is not None
        if flt is not None and not self.caps.iterative_scan:
            return None  # the index would filter only ef_search candidates: fewer than k
        await self._fill(store_id)
        await self._index(dims)
        where, params = (sql.SQL("TRUE"), []) if flt is None else _filter(flt)
        query = sql.SQL(
            "WITH found AS MATERIALIZED ("
            " SELECT c.file_id, c.seq, c.embedding::{vector} {op} %s::{vector} AS distance"
            " FROM chunks c JOIN chunk_heads h ON (h.store_id, h.file_id, h.generation)"
            " = (c.store_id, c.file_id, c.generation)"
            " WHERE c.store_id = %s AND c.dims = {dims} AND {where}"
            " ORDER BY c.embedding::{vector} {op} %s::{vector} LIMIT %s)"
            " SELECT file_id, seq, 1 - distance FROM found ORDER BY distance, file_id, seq"
        ).format(vector=self._type(dims), op=self._distance(), dims=sql.Literal(dims), where=where)
        text = vector_text(vector)
        args: list[Any] = [text, store_id, *params, text, k]
        async with self.db.conn() as conn, conn.transaction():
            if self.caps.iterative_scan:
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                await conn.execute(
                    sql.SQL("SET LOCAL hnsw.max_scan_tuples = {}").format(
                        sql.Literal(max(20_000, 20 * k))
                    )
                )
            await conn.execute(
                sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(min(1000, max(40, k))))
            )
            rows = await (await conn.execute(query, args)).fetchall()
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]


def _filter(flt: Filter) -> tuple[sql.Composable, list[Any]]:
    # Unqualified, ``attributes`` is the chunk's: chunk_heads has no such column.
    text, params = to_sql(flt, column="attributes")
    return sql.SQL(text), list(params)
