"""The VectorStoreRecords and ChunkStore roles of the PostgreSQL backend: stores, their files,
their chunks by generation and the embedding cache in the tables of migration 10, each call one
statement on a pooled connection (its data-modifying parts commit together). Vectors are plain
``bytea`` rows, float32, the truth; with pgvector each chunk also has an ``embedding`` that the
database searches (:mod:`genspool.backends.postgres._pgvector`)."""

from __future__ import annotations

from collections.abc import Sequence

from genspool.backends._errors import translated
from genspool.backends._records import page_query
from genspool.backends._sql import load_queries
from genspool.backends._vectors import chunk_rows, row_to_chunk, store_row, vfile_row
from genspool.backends.postgres._pgvector import PgVector
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.filters import Filter
from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.vectors import (
    Chunk,
    VectorStore,
    VectorStoreFile,
    store_from_doc,
    vfile_from_doc,
)

__all__ = ["PostgresChunks", "PostgresVectors"]

Q = encoded(load_queries("postgres", source="vectors.sql"))
_CHUNK_COLUMNS = (
    "store_id", "file_id", "seq", "generation", "text", "start_offset", "end_offset", "tokens",
    "page", "headings", "attributes", "vector",
)  # fmt: skip


class PostgresVectors(PostgresRecords, VectorStoreRecords):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("store_put", ERRORS)
    async def store_put(self, store: VectorStore) -> None:
        await self._written(Q["store_put"], store_row(store))

    @translated("store_get", ERRORS)
    async def store_get(self, store_id: str, tenant: str | None) -> VectorStore | None:
        return await self._doc(Q["store_get"], {"id": store_id, "tenant": tenant}, store_from_doc)

    @translated("store_list", ERRORS)
    async def store_list(self, flt: VectorFilter) -> list[VectorStore]:
        query, args = page_query(
            "vector_stores", "doc", {"tenant": flt.tenant}, after=flt.after, limit=flt.limit,
            mark="%({})s", order=flt.order,
        )  # fmt: skip
        return await self._docs(query.encode(), args, store_from_doc)

    @translated("store_update", ERRORS)
    async def store_update(self, store: VectorStore, version: int) -> bool:
        return await self._swap(Q["store_update"], store_row(store), version)

    @translated("store_delete", ERRORS)
    async def store_delete(self, store_id: str, tenant: str | None) -> bool:
        found = await self._rows(Q["store_delete"], {"id": store_id, "tenant": tenant})
        return bool(found[0][0])

    @translated("vfile_put", ERRORS)
    async def vfile_put(self, vfile: VectorStoreFile) -> bool:
        return bool(await self._written(Q["vfile_put"], vfile_row(vfile)))

    @translated("vfile_get", ERRORS)
    async def vfile_get(
        self, store_id: str, file_id: str, tenant: str | None
    ) -> VectorStoreFile | None:
        args = {"store_id": store_id, "id": file_id, "tenant": tenant}
        return await self._doc(Q["vfile_get"], args, vfile_from_doc)

    @translated("vfile_list", ERRORS)
    async def vfile_list(self, flt: VectorFilter) -> list[VectorStoreFile]:
        equal = {"store_id": flt.store_id, "tenant": flt.tenant, "status": flt.status}
        query, args = page_query(
            "vector_files", "doc", equal, after=flt.after, limit=flt.limit, mark="%({})s",
            order=flt.order,
        )  # fmt: skip
        return await self._docs(query.encode(), args, vfile_from_doc)

    @translated("vfile_update", ERRORS)
    async def vfile_update(self, vfile: VectorStoreFile, version: int) -> bool:
        return await self._swap(Q["vfile_update"], vfile_row(vfile), version)

    @translated("vfile_delete", ERRORS)
    async def vfile_delete(self, store_id: str, file_id: str, tenant: str | None) -> bool:
        args = {"store_id": store_id, "id": file_id, "tenant": tenant}
        return bool(await self._written(Q["vfile_delete"], args))


class PostgresChunks(PostgresRecords, ChunkStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses.
    When the server has pgvector, chunks carry an ``embedding`` too and searches run in the
    database (:mod:`genspool.backends.postgres._pgvector`)."""

    _pgvector_of: PgVector | None = None

    @property
    def _pgvector(self) -> PgVector:
        if self._pgvector_of is None:
            self._pgvector_of = PgVector(self._db)
        return self._pgvector_of

    @translated("chunks_put", ERRORS)
    async def chunks_put(self, chunks: Sequence[Chunk]) -> None:
        rows = chunk_rows(chunks)
        if not rows:
            return
        args = {c: [r[c] for r in rows] for c in _CHUNK_COLUMNS}
        pgvector = self._pgvector
        if not await pgvector.ready():
            await self._written(Q["chunks_put"], args)
            return
        async with self._db.conn() as conn, conn.transaction():
            await conn.execute(Q["chunks_put"], args)
            await pgvector.put(conn, chunks)

    @translated("chunks_nearest", ERRORS)
    async def chunks_nearest(
        self, store_id: str, dimensions: int, vector: bytes, k: int, flt: Filter | None
    ) -> list[tuple[str, int, float]] | None:
        return await self._pgvector.nearest(store_id, dimensions, vector, k, flt)

    @translated("chunks_flip", ERRORS)
    async def chunks_flip(self, store_id: str, file_id: str, generation: int) -> int:
        args = {"store_id": store_id, "file_id": file_id, "generation": generation}
        return int((await self._rows(Q["chunks_flip"], args))[0][0])

    @translated("chunks_drop", ERRORS)
    async def chunks_drop(self, store_id: str, file_id: str | None) -> int:
        query = Q["chunks_drop_store" if file_id is None else "chunks_drop_file"]
        found = await self._rows(query, {"store_id": store_id, "file_id": file_id})
        return int(found[0][0])

    @translated("chunks_current", ERRORS)
    async def chunks_current(
        self, store_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[Chunk]:
        file_id, seq = after or ("", -1)  # before every (file_id, seq)
        args = {"store_id": store_id, "file_id": file_id, "seq": seq, "limit": limit}
        return [row_to_chunk(r) for r in await self._rows(Q["chunks_current"], args)]

    @translated("chunks_get", ERRORS)
    async def chunks_get(self, store_id: str, keys: Sequence[tuple[str, int]]) -> list[Chunk]:
        if not keys:
            return []
        args = {"store_id": store_id, "file_id": [f for f, _ in keys], "seq": [s for _, s in keys]}
        return [row_to_chunk(r) for r in await self._rows(Q["chunks_get"], args)]

    @translated("chunks_revision", ERRORS)
    async def chunks_revision(self, store_id: str) -> int:
        found = await self._rows(Q["chunks_revision"], {"store_id": store_id})
        return int(found[0][0]) if found else 0

    @translated("cache_get", ERRORS)
    async def cache_get(self, model: str, dimensions: int, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        args = {"model": model, "dimensions": dimensions, "keys": list(keys)}
        return {key: bytes(vector) for key, vector in await self._rows(Q["cache_get"], args)}

    @translated("cache_put", ERRORS)
    async def cache_put(self, model: str, dimensions: int, vectors: dict[str, bytes]) -> None:
        if vectors:
            args = {"model": model, "dimensions": dimensions, "key": list(vectors),
                    "vector": list(vectors.values())}  # fmt: skip
            await self._written(Q["cache_put"], args)
