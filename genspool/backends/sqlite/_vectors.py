"""The VectorStoreRecords and ChunkStore roles of the SQLite backend: stores, their files, their
chunks by generation and the embedding cache in the tables of migration 11, reads on the
reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from genspool.backends._errors import translated
from genspool.backends._records import page_query
from genspool.backends._sql import load_queries
from genspool.backends._vectors import chunk_rows, in_order, row_to_chunk, store_row, vfile_row
from genspool.backends.sqlite._conn import write
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.vectors import (
    Chunk,
    VectorStore,
    VectorStoreFile,
    store_from_doc,
    vfile_from_doc,
)

__all__ = ["SQLiteChunks", "SQLiteVectors"]

Q = load_queries("sqlite", source="vectors.sql")
#: Parameters per read of ``chunks_get`` and ``cache_get``: under SQLITE_MAX_VARIABLE_NUMBER
#: of builds older than 3.32 (999), with the few other parameters.
PARAMS_CHUNK = 900


def _slices(keys: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


class SQLiteVectors(SQLiteRecords, VectorStoreRecords):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

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
            mark=":{}", order=flt.order,
        )  # fmt: skip
        return await self._docs(query, args, store_from_doc)

    @translated("store_update", ERRORS)
    async def store_update(self, store: VectorStore, version: int) -> bool:
        return await self._swap(Q["store_update"], store_row(store), version)

    @translated("store_delete", ERRORS)
    async def store_delete(self, store_id: str, tenant: str | None) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            if not db.execute(Q["store_delete"], {"id": store_id, "tenant": tenant}).rowcount:
                return False
            db.execute(Q["store_files_delete"], {"id": store_id})
            return True

        return await self._w.run(write(delete))

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
            "vector_files", "doc", equal, after=flt.after, limit=flt.limit, mark=":{}",
            order=flt.order,
        )  # fmt: skip
        return await self._docs(query, args, vfile_from_doc)

    @translated("vfile_update", ERRORS)
    async def vfile_update(self, vfile: VectorStoreFile, version: int) -> bool:
        return await self._swap(Q["vfile_update"], vfile_row(vfile), version)

    @translated("vfile_delete", ERRORS)
    async def vfile_delete(self, store_id: str, file_id: str, tenant: str | None) -> bool:
        args = {"store_id": store_id, "id": file_id, "tenant": tenant}
        return bool(await self._written(Q["vfile_delete"], args))


def _bump(db: sqlite3.Connection, store_id: str) -> int:
    """Move the store's revision on, in the caller's transaction; returns the new one."""
    return int(db.execute(Q["revision_bump"], {"store_id": store_id}).fetchall()[0][0])


class SQLiteChunks(SQLiteRecords, ChunkStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    @translated("chunks_put", ERRORS)
    async def chunks_put(self, chunks: Sequence[Chunk]) -> None:
        rows = chunk_rows(chunks)
        if rows:  # one transaction, on the writer's thread: 1000 chunks of 384 floats and 800
            # characters took 25-100 ms here, too long to hold the event loop
            put = write(lambda db: db.executemany(Q["chunks_put"], rows))
            await self._w.run(put, inline=False)

    @translated("chunks_flip", ERRORS)
    async def chunks_flip(self, store_id: str, file_id: str, generation: int) -> int:
        args = {"store_id": store_id, "file_id": file_id, "generation": generation}

        def flip(db: sqlite3.Connection) -> int:
            db.execute(Q["head_put"], args)
            db.execute(Q["chunks_retire"], args)
            return _bump(db, store_id)

        return await self._w.run(write(flip))

    @translated("chunks_drop", ERRORS)
    async def chunks_drop(self, store_id: str, file_id: str | None) -> int:
        of = "store" if file_id is None else "file"
        args = {"store_id": store_id, "file_id": file_id}

        def drop(db: sqlite3.Connection) -> int:
            db.execute(Q[f"chunks_drop_{of}"], args)
            db.execute(Q[f"heads_drop_{of}"], args)
            return _bump(db, store_id)

        return await self._w.run(write(drop))

    @translated("chunks_current", ERRORS)
    async def chunks_current(
        self, store_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[Chunk]:
        file_id, seq = after or ("", -1)  # before every (file_id, seq)
        args = {"store_id": store_id, "file_id": file_id, "seq": seq, "limit": limit}
        return [row_to_chunk(r) for r in await self._rows(Q["chunks_current"], args)]

    @translated("chunks_get", ERRORS)
    async def chunks_get(self, store_id: str, keys: Sequence[tuple[str, int]]) -> list[Chunk]:
        found: list[Chunk] = []
        for part in _slices(keys, PARAMS_CHUNK // 2):
            query = Q["chunks_get"].replace("{keys}", ", ".join(["(?, ?)"] * len(part)))
            args = [v for key in part for v in key]
            found += [row_to_chunk(r) for r in await self._rows(query, [*args, store_id])]
        return in_order(found, keys)

    @translated("chunks_revision", ERRORS)
    async def chunks_revision(self, store_id: str) -> int:
        found = await self._rows(Q["chunks_revision"], {"store_id": store_id})
        return int(found[0][0]) if found else 0

    @translated("cache_get", ERRORS)
    async def cache_get(self, model: str, dimensions: int, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for part in _slices(keys, PARAMS_CHUNK):
            query = Q["cache_get"].replace("{keys}", ",".join("?" * len(part)))
            found.update(await self._rows(query, [model, dimensions, *part]))
        return found

    @translated("cache_put", ERRORS)
    async def cache_put(self, model: str, dimensions: int, vectors: dict[str, bytes]) -> None:
        rows = [{"model": model, "dimensions": dimensions, "key": k, "vector": v}
                for k, v in vectors.items()]  # fmt: skip
        if rows:  # on the writer's thread, as chunks_put: a batch's vectors are megabytes
            await self._w.run(write(lambda db: db.executemany(Q["cache_put"], rows)), inline=False)
