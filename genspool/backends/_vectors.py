"""What the backends' VectorStoreRecords and ChunkStore roles share: the rows of a vector store,
of its files and of their chunks as the SQL backends write and read them, and mixins that fill
both roles from a process's memory (the memory backend)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.vectors import Chunk, VectorStore, VectorStoreFile, store_to_doc, vfile_to_doc

__all__ = [
    "ChunkState",
    "MemoryChunks",
    "MemoryVectors",
    "VectorState",
    "chunk_rows",
    "in_order",
    "row_to_chunk",
    "store_row",
    "vfile_row",
]

T = TypeVar("T", VectorStore, VectorStoreFile)
ChunkKey = tuple[str, int]  # (file_id, seq)


def store_row(store: VectorStore) -> dict[str, Any]:
    """The named parameters of ``store_put`` and ``store_update`` (whose caller sets
    ``version``, the stored one it expects; ``next`` is the one it writes)."""
    row = {"id": store.id, "tenant": store.tenant, "doc": store_to_doc(store)}
    return {**row, "version": store.version, "next": store.version}


def vfile_row(vfile: VectorStoreFile) -> dict[str, Any]:
    """The named parameters of ``vfile_put`` and ``vfile_update``, as :func:`store_row`."""
    row = {"store_id": vfile.store_id, "id": vfile.id, "tenant": vfile.tenant}
    doc = vfile_to_doc(vfile)
    return {**row, "status": vfile.status, "version": vfile.version, "next": vfile.version,
            "doc": doc}  # fmt: skip


def chunk_rows(chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
    """The named parameters of ``chunks_put``, one dict per chunk; of two chunks of one key the
    later one (PostgreSQL's upsert may not write one row twice)."""
    last = {(c.store_id, c.file_id, c.generation, c.seq): c for c in chunks}.values()
    return [
        {"store_id": c.store_id, "file_id": c.file_id, "generation": c.generation,
         "seq": c.seq, "text": c.text, "start_offset": c.start, "end_offset": c.end,
         "tokens": c.tokens, "vector": c.vector, "page": c.page,
         "headings": orjson.dumps(c.headings).decode(),
         "attributes": orjson.dumps(c.attributes).decode()}
        for c in last
    ]  # fmt: skip


def row_to_chunk(row: Sequence[Any]) -> Chunk:
    """A chunk from its columns, selected in :class:`Chunk`'s fields' order (``headings`` and
    ``attributes`` as JSON text)."""
    store_id, file_id, generation, seq, text, start, end, tokens, vector, page, *json = row
    return Chunk(
        store_id, file_id, generation, seq, text, start, end, tokens, vector, page,
        tuple(orjson.loads(json[0])), orjson.loads(json[1]),
    )  # fmt: skip


def in_order(chunks: Iterable[Chunk], keys: Sequence[ChunkKey]) -> list[Chunk]:
    """The chunks of ``keys`` in that order, leaving out those not found."""
    found = {(c.file_id, c.seq): c for c in chunks}
    return [found[k] for k in keys if k in found]


def _page(records: Iterable[T], flt: VectorFilter) -> list[T]:
    """A page of records by id in ``flt.order``, past the cursor ``flt.after``."""
    desc = flt.order == "desc"
    if flt.after is not None:
        after = flt.after
        records = [r for r in records if (r.id < after if desc else r.id > after)]
    return sorted(records, key=lambda r: r.id, reverse=desc)[: flt.limit]


@dataclass
class VectorState:
    """A memory backend's vector stores and their files (shared by the backends of one name)."""

    stores: dict[str, VectorStore] = field(default_factory=dict)
    files: dict[tuple[str, str], VectorStoreFile] = field(default_factory=dict)  # (store, id)

    def clear(self) -> None:
        self.stores.clear()
        self.files.clear()


class MemoryVectors(VectorStoreRecords):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: records in the backend's
    shared state (``_vectors``). Records are frozen: stored and handed out as they are."""

    _vectors: VectorState

    async def store_put(self, store: VectorStore) -> None:
        self._vectors.stores[store.id] = store

    async def store_get(self, store_id: str, tenant: str | None) -> VectorStore | None:
        found = self._vectors.stores.get(store_id)
        return found if found is not None and tenant in (None, found.tenant) else None

    async def store_list(self, flt: VectorFilter) -> list[VectorStore]:
        mine = (s for s in self._vectors.stores.values() if flt.tenant in (None, s.tenant))
        return _page(mine, flt)

    async def store_update(self, store: VectorStore, version: int) -> bool:
        stored = self._vectors.stores.get(store.id)
        if stored is None or stored.version != version:
            return False
        self._vectors.stores[store.id] = store
        return True

    async def store_delete(self, store_id: str, tenant: str | None) -> bool:
        s = self._vectors
        if await self.store_get(store_id, tenant) is None:
            return False
        del s.stores[store_id]
        for key in [k for k in s.files if k[0] == store_id]:
            del s.files[key]
        return True

    async def vfile_put(self, vfile: VectorStoreFile) -> bool:
        return self._vectors.files.setdefault((vfile.store_id, vfile.id), vfile) is vfile

    async def vfile_get(
        self, store_id: str, file_id: str, tenant: str | None
    ) -> VectorStoreFile | None:
        found = self._vectors.files.get((store_id, file_id))
        return found if found is not None and tenant in (None, found.tenant) else None

    async def vfile_list(self, flt: VectorFilter) -> list[VectorStoreFile]:
        found = (
            f
            for f in self._vectors.files.values()
            if flt.store_id in (None, f.store_id)
            and flt.tenant in (None, f.tenant)
            and flt.status in (None, f.status)
        )
        return _page(found, flt)

    async def vfile_update(self, vfile: VectorStoreFile, version: int) -> bool:
        key = (vfile.store_id, vfile.id)
        stored = self._vectors.files.get(key)
        if stored is None or stored.version != version:
            return False
        self._vectors.files[key] = vfile
        return True

    async def vfile_delete(self, store_id: str, file_id: str, tenant: str | None) -> bool:
        if await self.vfile_get(store_id, file_id, tenant) is None:
            return False
        del self._vectors.files[(store_id, file_id)]
        return True


@dataclass
class ChunkState:
    """A memory backend's chunks, the current generation of each file, the stores' revisions
    and the embedding cache."""

    #: (store, file) -> (generation, seq) -> chunk
    chunks: dict[tuple[str, str], dict[tuple[int, int], Chunk]] = field(default_factory=dict)
    heads: dict[tuple[str, str], int] = field(default_factory=dict)  # (store, file) -> current
    revisions: dict[str, int] = field(default_factory=dict)
    cache: dict[tuple[str, int, str], bytes] = field(default_factory=dict)

    def clear(self) -> None:
        for part in (self.chunks, self.heads, self.revisions, self.cache):
            part.clear()

    def bump(self, store_id: str) -> int:
        self.revisions[store_id] = revision = self.revisions.get(store_id, 0) + 1
        return revision

    def current(self, store_id: str, file_id: str) -> dict[int, Chunk]:
        """The current chunks of a file by seq (none while it has no current generation)."""
        head = self.heads.get((store_id, file_id))
        of_file = self.chunks.get((store_id, file_id), {})
        return {seq: c for (gen, seq), c in of_file.items() if gen == head}


class MemoryChunks(ChunkStore):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: chunks in the backend's
    shared state (``_chunks``)."""

    _chunks: ChunkState

    async def chunks_put(self, chunks: Sequence[Chunk]) -> None:
        for c in chunks:
            self._chunks.chunks.setdefault((c.store_id, c.file_id), {})[(c.generation, c.seq)] = c

    async def chunks_flip(self, store_id: str, file_id: str, generation: int) -> int:
        s = self._chunks
        s.heads[(store_id, file_id)] = generation
        of_file = s.chunks.get((store_id, file_id), {})
        s.chunks[(store_id, file_id)] = {k: c for k, c in of_file.items() if k[0] == generation}
        return s.bump(store_id)

    async def chunks_drop(self, store_id: str, file_id: str | None) -> int:
        s = self._chunks
        for part in (s.chunks, s.heads):
            for key in [k for k in part if k[0] == store_id and file_id in (None, k[1])]:
                del part[key]
        return s.bump(store_id)

    async def chunks_current(
        self, store_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[Chunk]:
        s, (after_file, after_seq) = self._chunks, after or ("", -1)
        files = sorted(f for (store, f) in s.heads if store == store_id and f >= after_file)
        out: list[Chunk] = []
        for file_id in files:
            current = s.current(store_id, file_id)
            seqs = sorted(q for q in current if (file_id, q) > (after_file, after_seq))
            out += [current[q] for q in seqs[: limit - len(out)]]
            if len(out) >= limit:
                break
        return out

    async def chunks_get(self, store_id: str, keys: Sequence[ChunkKey]) -> list[Chunk]:
        s = self._chunks
        files = {f for f, _ in keys}
        return in_order((c for f in files for c in s.current(store_id, f).values()), keys)

    async def chunks_revision(self, store_id: str) -> int:
        return self._chunks.revisions.get(store_id, 0)

    async def cache_get(self, model: str, dimensions: int, keys: Sequence[str]) -> dict[str, bytes]:
        cache = self._chunks.cache
        return {k: v for k in keys if (v := cache.get((model, dimensions, k))) is not None}

    async def cache_put(self, model: str, dimensions: int, vectors: dict[str, bytes]) -> None:
        for key, vector in vectors.items():
            self._chunks.cache.setdefault((model, dimensions, key), vector)
