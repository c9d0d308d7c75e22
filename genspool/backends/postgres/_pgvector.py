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


_FORMATS: dict[int, str] = {}


def vector_text(vector: bytes) -> str:
    """pgvector's text form of a float32 little-endian vector (9 significant digits: every
    float32 back exactly), one C-level format per vector (~0.3 ms at 384 dimensions)."""
    values = np.frombuffer(vector, dtype="<f4").tolist()
    fmt = _FORMATS.get(len(values))
    if fmt is None:
        fmt = _FORMATS[len(values)] = "[" + ",".join(["%.9g"] * len(values)) + "]"
    return fmt % tuple(values)


class PgVector:
    """pgvector on one backend's database, asked once (:meth:`ready`)."""

    def __init__(self, db: Connections) -> None:
        self.db = db
        self.caps: PgVectorCaps | None = None
        self._probing = asyncio.Lock()
        #: Widths whose index exists (valid), and stores with no row lacking its embedding.
        self._indexed: set[int] = set()
        self._filled: set[str] = set()
        #: Index builds and fills under way, in the background: never inside a call (an
        #: index of 100k rows takes minutes, far past a call's timeout).
        self._work: dict[object, asyncio.Task[None]] = {}

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

    def _background(self, key: object, work: Any) -> None:
        """Run ``work`` (a coroutine) once at a time per ``key``, apart from any call."""
        task = self._work.get(key)
        if task is not None and not task.done():
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._work[key] = task

    async def aclose(self) -> None:
        for task in self._work.values():
            task.cancel()
        await asyncio.gather(*self._work.values(), return_exceptions=True)
        self._work.clear()

    async def _has_index(self, dims: int) -> bool:
        """Whether the width's index exists and is valid; if not, it is built meanwhile."""
        if dims in self._indexed:
            return True
        found = await self.db.fetch(
            b"SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            b" WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace",
            [f"chunks_hnsw_{dims}"],
        )
        if found and found[0][0]:
            self._indexed.add(dims)
            return True
        self._background(("index", dims), self._build(dims, rebuild=bool(found)))
        return False

    async def _build(self, dims: int, *, rebuild: bool) -> None:
        assert self.caps is not None and self.caps.schema is not None
        name = sql.Identifier(f"chunks_hnsw_{dims}")
        create = sql.SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON chunks USING hnsw"
            " ((embedding::{vector}) {ops}) WHERE dims = {dims}"
        ).format(
            name=name,
            vector=self._type(dims),
            ops=sql.Identifier(self.caps.schema, "vector_cosine_ops"),
            dims=sql.Literal(dims),
        )
        try:
            async with self.db.conn() as conn:
                if rebuild:  # a build that was interrupted left an invalid index
                    await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
                await conn.execute(create)
        except psycopg.Error as exc:
            log.warning("the HNSW index of width %d was not built (%s): exact search", dims, exc)

    async def _complete(self, store_id: str) -> bool:
        """Whether every row of the store has its embedding; if not, they get them meanwhile
        (rows written before pgvector was there)."""
        if store_id in self._filled:
            return True
        missing = await self.db.fetch(
            b"SELECT EXISTS (SELECT FROM chunks WHERE store_id = %s AND embedding IS NULL)",
            [store_id],
        )
        if not missing[0][0]:
            self._filled.add(store_id)
            return True
        self._background(("fill", store_id), self._fill(store_id))
        return False

    async def _fill(self, store_id: str) -> None:
        select = b"SELECT store_id, file_id, seq, generation, vector FROM chunks" \
                 b" WHERE store_id = %s AND embedding IS NULL LIMIT %s"  # fmt: skip
        try:
            while rows := await self.db.fetch(select, [store_id, FILL_PAGE]):
                await self._embed([(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows])
        except psycopg.Error as exc:
            log.warning("the embeddings of store %s were not filled in (%s)", store_id, exc)

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
        if not await self._complete(store_id):
            return None  # rows without an embedding: ranked in memory until they have one
        indexed = await self._has_index(dims)  # without its index yet: exact, in SQL
        where, params = (sql.SQL("TRUE"), []) if flt is None else _filter(flt)
        distance = sql.SQL("c.embedding::{vector} {op} %s::{vector}").format(
            vector=self._type(dims), op=self._distance()
        )
        template = (
            "WITH found AS MATERIALIZED ("
            " SELECT c.file_id, c.seq, {distance} AS distance FROM chunks c"
            " WHERE c.store_id = %s AND c.dims = {dims} AND {where} AND EXISTS ("
            "  SELECT FROM chunk_heads h WHERE (h.store_id, h.file_id, h.generation)"
            "  = (c.store_id, c.file_id, c.generation))"
            " ORDER BY {order} LIMIT %s)"
            " SELECT file_id, seq, 1 - distance FROM found ORDER BY distance, file_id, seq"
        )
        text = vector_text(vector)
        args: list[Any] = [text, store_id, *params, text, k]

        def query(order: sql.Composable) -> sql.Composed:
            return sql.SQL(template).format(
                distance=distance, dims=sql.Literal(dims), where=where, order=order
            )

        async with self.db.conn() as conn, conn.transaction():
            if self.caps.iterative_scan:
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                await conn.execute(
                    sql.SQL("SET LOCAL hnsw.max_scan_tuples = {}").format(
                        sql.Literal(max(20_000, 20 * k))
                    )
                )
            ef_search = sql.Literal(min(1000, max(40, k)))
            await conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(ef_search))
            rows: list[Any] = []
            if indexed:
                # The index walks the width nearest first; a sort of every row of the store
                # is what the planner picks otherwise (it underrates the walk's LIMIT).
                await conn.execute("SET LOCAL enable_sort = off")
                rows = await (await conn.execute(query(distance), args)).fetchall()
            if len(rows) < k:
                # The walk stopped early (max_scan_tuples among other stores' rows, or fewer
                # matches than k): rank exactly, so a search returns k whenever k exist.
                await conn.execute("SET LOCAL enable_sort = on")
                exact = sql.SQL("({}) + 0").format(distance)  # not the index's expression
                rows = await (await conn.execute(query(exact), args)).fetchall()
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]


def _filter(flt: Filter) -> tuple[sql.Composable, list[Any]]:
    # Unqualified, ``attributes`` is the chunk's: chunk_heads has no such column.
    text, params = to_sql(flt, column="attributes")
    return sql.SQL(text), list(params)
