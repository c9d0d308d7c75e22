"""Ingesting one document into a vector store, and the runner that ingests every pending one.

A vector store file waits ``in_progress`` until an API process's :class:`Ingester` takes it
(a lease on its record, as batches and pipeline runs are driven), and then:

1. reads the document (a Files API file) and extracts its text in a thread
   (:mod:`genspool.rag.documents`); the same text as the current generation's is ``skipped``;
2. cuts it by the embedding model's own tokenizer (:mod:`genspool.rag.chunking`);
3. embeds the chunks through the queue (:class:`~genspool.rag.embedder.Embedder`: cached by
   text, so only changed chunks cost a call);
4. writes them under the next generation, invisible, then flips: one transaction makes it
   current and deletes the old one (:meth:`~genspool.core.roles.ChunkStore.chunks_flip`).

A failure at any step before the flip leaves the old generation current (searches keep
answering from it) and the file ``failed`` with the reason; a process that dies mid-way leaves
the lease to run out, and another takes the file again from the start (its embeddings cached).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from typing import Any

from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.scanner import Scanner
from genspool.core.vectors import Chunk, VectorStore, VectorStoreFile
from genspool.exceptions import GenspoolError, NotFound
from genspool.files import Files
from genspool.rag import chunking
from genspool.rag.documents import Document, extract
from genspool.rag.embedder import Embedder, EmbeddingFailed

__all__ = ["DEFAULT_CHUNKING", "Ingester", "static_sizes"]

log = logging.getLogger("genspool.rag")

#: OpenAI's ``auto`` strategy: 800-token chunks overlapping by 400.
DEFAULT_CHUNKING: dict[str, Any] = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}


def static_sizes(strategy: dict[str, Any]) -> tuple[int, int]:
    static = strategy.get("static") or DEFAULT_CHUNKING["static"]
    return int(static["max_chunk_size_tokens"]), int(static["chunk_overlap_tokens"])


class Ingester(Scanner):
    WHAT = "files to ingest"
    LEASE_S = 60.0
    MAX_DRIVEN = 4

    def __init__(
        self,
        records: VectorStoreRecords,
        chunks: ChunkStore,
        files: Files,
        queue: Queue,
        tokenizer: Callable[[str], Any],
    ) -> None:
        """``tokenizer``: the ``tokenizers.Tokenizer`` of an embedding model, by its name."""
        super().__init__(log)
        self.records, self.chunks, self.files, self.queue = records, chunks, files, queue
        self.tokenizer = tokenizer
        self.owner = f"ingest-{uuid.uuid4().hex[:12]}"
        self.clock = queue.clock
        #: How many embedding jobs ingestion submitted, and how many texts they embedded (the
        #: others came from the cache): the CLI shows them, tests count them.
        self.embed_jobs = 0
        self.embedded = 0

    async def scan(self) -> None:
        pending = await self.records.vfile_list(
            VectorFilter(status="in_progress", order="asc", limit=100)
        )
        now = self.clock()
        for vf in pending:
            key = f"{vf.store_id}/{vf.id}"
            if self.driving(key) or self.full:
                continue
            if vf.owner not in (None, self.owner) and vf.lease_until > now:
                continue
            held = dataclasses.replace(
                vf, owner=self.owner, lease_until=now + self.LEASE_S, version=vf.version + 1
            )
            if await self.records.vfile_update(held, vf.version):
                self.drive(key, self._ingest(held))

    async def _ingest(self, vf: VectorStoreFile) -> None:
        try:
            store = await self.records.store_get(vf.store_id, None)
            if store is None:
                return
            outcome = await self.ingest(store, vf)
            await self._end(vf, outcome)
        except asyncio.CancelledError:
            raise
        except (GenspoolError, OSError, ValueError) as exc:
            code = "embedding_failed" if isinstance(exc, EmbeddingFailed) else "invalid_file"
            if isinstance(exc, NotFound):
                code = "file_not_found"
            log.info("vector store file %s failed: %s", vf.id, exc)
            await self._end(
                vf, {"status": "failed", "last_error": {"code": code, "message": str(exc)}}
            )
        except Exception as exc:
            log.exception("vector store file %s: ingesting it failed", vf.id)
            await self._end(vf, {"status": "failed", "last_error": {
                "code": "server_error", "message": f"{type(exc).__name__}: {exc}"}})  # fmt: skip

    async def _end(self, vf: VectorStoreFile, changes: dict[str, Any]) -> None:
        """Write the outcome over the record as it is now (its attributes may have changed)."""
        for _ in range(10):
            now = await self.records.vfile_get(vf.store_id, vf.id, None)
            if now is None or now.owner != self.owner or now.status == "cancelled":
                return
            done = dataclasses.replace(
                now, **changes, owner=None, lease_until=0.0, pending_generation=None,
                version=now.version + 1,
            )  # fmt: skip
            if await self.records.vfile_update(done, now.version):
                return

    async def _sized(self, store: VectorStore, dimensions: int) -> None:
        """Record a store's dimensions, from its first vectors (another process may have
        recorded them first: they must agree)."""
        for _ in range(10):
            now = await self.records.store_get(store.id, None)
            if now is None:
                return
            if now.dimensions is not None:
                if now.dimensions != dimensions:
                    raise EmbeddingFailed(
                        f"embedding model {store.model} made {dimensions} dimensions; the store"
                        f" holds {now.dimensions}"
                    )
                return
            sized = dataclasses.replace(now, dimensions=dimensions, version=now.version + 1)
            if await self.records.store_update(sized, now.version):
                return

    async def ingest(self, store: VectorStore, vf: VectorStoreFile) -> dict[str, Any]:
        """The steps above; the changes to the file's record once its chunks are current."""
        record, content = await self.files.content(vf.content_file_id or vf.id, vf.tenant)
        data = b"".join([c async for c in content])
        doc: Document = await asyncio.to_thread(extract, data, record.filename, None)
        if vf.generation and doc.sha256 == vf.content_sha256:
            return {"status": "completed"}  # unchanged: nothing to embed or write
        size, overlap = static_sizes(vf.chunking)
        tok = self.tokenizer(store.model)
        pieces = await asyncio.to_thread(chunking.chunk, doc, tok, size, overlap)
        embedder = Embedder(self.queue, self.chunks, store.model, store.dimensions,
                            tenant=vf.tenant)  # fmt: skip
        vectors = await embedder.embed([p.text for p in pieces])
        if store.dimensions is None and embedder.dimensions is not None:
            await self._sized(store, embedder.dimensions)
        self.embed_jobs += embedder.stats.jobs
        self.embedded += embedder.stats.texts - embedder.stats.cached
        generation = vf.generation + 1
        rows = [
            Chunk(
                store_id=vf.store_id,
                file_id=vf.id,
                generation=generation,
                seq=p.seq,
                text=p.text,
                start=p.start,
                end=p.end,
                tokens=p.tokens,
                vector=v,
                page=p.page,
                headings=tuple(p.headings),
                attributes=dict(vf.attributes),
            )
            for p, v in zip(pieces, vectors, strict=True)
        ]
        for start in range(0, len(rows), 500):
            await self.chunks.chunks_put(rows[start : start + 500])
        fresh = await self.records.vfile_get(vf.store_id, vf.id, None)
        if fresh is None or fresh.owner != self.owner or fresh.status == "cancelled":
            # Not flipped: the old generation stays current; the rows just written are
            # deleted by the file's next flip, or with the file.
            return {"status": fresh.status if fresh else "cancelled"}
        await self.chunks.chunks_flip(vf.store_id, vf.id, generation)
        return {
            "status": "completed", "generation": generation, "content_sha256": doc.sha256,
            "chunks": len(rows), "usage_bytes": sum(len(r.text.encode()) for r in rows),
            "last_error": None,
        }  # fmt: skip
