"""Vector stores: what the OpenAI-compatible routes do (stores, their files, file batches,
search), over the :class:`~genspool.core.roles.VectorStoreRecords` and
:class:`~genspool.core.roles.ChunkStore` roles, with the :class:`~genspool.rag.ingest.Ingester`
each API process runs.

Search is exact and filtered before ranking (:class:`~genspool.rag.search.Searcher`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from genspool._ids import random_hex
from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.vectors import VectorStore, VectorStoreFile, new_store_id
from genspool.exceptions import Conflict, InvalidRequest, NotFound
from genspool.files import Files
from genspool.rag.embedder import Embedder, EmbeddingFailed
from genspool.rag.ingest import DEFAULT_CHUNKING, Ingester, static_sizes
from genspool.rag.search import Hit, Searcher

__all__ = ["Hit", "StorePage", "VectorStores", "check_chunking", "new_batch_id"]


def new_batch_id() -> str:
    return f"vsfb_{time.time_ns():x}{random_hex(5)}"


@dataclass(frozen=True, slots=True)
class StorePage:
    data: list[Any]
    has_more: bool


def check_chunking(strategy: dict[str, Any] | None, window: int | None = None) -> dict[str, Any]:
    """OpenAI's ``chunking_strategy`` as stored: ``auto`` is static 800/400, or the embedding
    model's context window and half of it when that is smaller (MiniLM reads 256 tokens)."""
    if strategy is None or strategy.get("type") == "auto":
        size, overlap = static_sizes(DEFAULT_CHUNKING)
        if window is not None and window < size:
            size, overlap = window, window // 4
        return {"type": "static", "static": {"max_chunk_size_tokens": size,
                                              "chunk_overlap_tokens": overlap}}  # fmt: skip
    if strategy.get("type") != "static" or not isinstance(strategy.get("static"), dict):
        raise InvalidRequest(
            "chunking_strategy: {type: auto} or {type: static, static: {max_chunk_size_tokens,"
            " chunk_overlap_tokens}}",
            param="chunking_strategy",
        )
    size, overlap = static_sizes(strategy)
    if window is not None and size > window:
        raise InvalidRequest(
            f"chunking_strategy.static.max_chunk_size_tokens: {size} is more than the"
            f" embedding model reads ({window} tokens)",
            param="chunking_strategy",
        )
    if not 100 <= size <= 4096:
        raise InvalidRequest(
            f"chunking_strategy.static.max_chunk_size_tokens: {size} is not from 100 to 4096",
            param="chunking_strategy",
        )
    if not 0 <= overlap <= size // 2:
        raise InvalidRequest(
            f"chunking_strategy.static.chunk_overlap_tokens: {overlap} is not from 0 to half of"
            f" max_chunk_size_tokens ({size // 2})",
            param="chunking_strategy",
        )
    return {"type": "static", "static": {"max_chunk_size_tokens": size,
                                          "chunk_overlap_tokens": overlap}}  # fmt: skip


class VectorStores:
    def __init__(
        self,
        records: VectorStoreRecords,
        chunks: ChunkStore,
        files: Files,
        queue: Queue,
        *,
        model: str,
        tokenizer: Callable[[str], Any],
        known_models: Callable[[], set[str]],
        window: Callable[[str], int | None] = lambda _: None,
        dimensions: Callable[[str], int | None] = lambda _: None,
    ) -> None:
        """``model``: the embedding model of new stores; ``known_models``: the served
        embedding models (a store may name one of them); ``window``: a model's context
        window in tokens (no chunk is longer: the model would cut it); ``dimensions``: the
        size of a model's vectors when its card declares it (None: one embedding job of a
        short text learns it, when a refusal has to name it)."""
        self.records, self.chunks, self.files, self.queue = records, chunks, files, queue
        self.model, self.known_models, self.window = model, known_models, window
        self.dimensions = dimensions
        self.ingester = Ingester(records, chunks, files, queue, tokenizer)
        self.searcher = Searcher(chunks, files.store, queue)

    async def run(self) -> None:
        await self.ingester.run()

    # -- stores --------------------------------------------------------------------------------

    async def create(
        self,
        *,
        tenant: str,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        expires_after: dict[str, Any] | None = None,
        model: str | None = None,
        file_ids: list[str] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
    ) -> VectorStore:
        model = model or self.model
        self._served(model)
        now = self.queue.clock()
        store = VectorStore(
            id=new_store_id(), tenant=tenant, created_at=now, model=model, dimensions=None,
            name=name, metadata=metadata, expires_after=expires_after,
            expires_at=_expiry(expires_after, now), last_active_at=now,
        )  # fmt: skip
        await self.records.store_put(store)
        for file_id in file_ids or ():
            await self.add_file(
                store.id, file_id, tenant=tenant, chunking_strategy=chunking_strategy
            )
        return store

    async def get(self, store_id: str, tenant: str | None) -> VectorStore:
        found = await self.records.store_get(store_id, tenant)
        if found is None:
            raise NotFound(f"no vector store {store_id!r}", param="vector_store_id")
        return found

    async def page(
        self, tenant: str | None, *, after: str | None, limit: int, order: str
    ) -> StorePage:
        _check_page(limit, order)
        found = await self.records.store_list(VectorFilter(tenant, None, None, after, limit + 1,
                                                           order))  # fmt: skip
        return StorePage(found[:limit], len(found) > limit)

    async def update(
        self,
        store_id: str,
        tenant: str | None,
        *,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        expires_after: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> VectorStore:
        """Rename, change the metadata or expiry; ``model`` may only name the store's own
        (anything else is refused before any change is made)."""
        if model is not None:
            await self._same_model(await self.get(store_id, tenant), model)
        for _ in range(10):
            store = await self.get(store_id, tenant)
            changes: dict[str, Any] = {}
            if name is not None:
                changes["name"] = name
            if metadata is not None:
                changes["metadata"] = metadata
            if expires_after is not None:
                changes["expires_after"] = expires_after
                changes["expires_at"] = _expiry(expires_after, store.last_active_at or 0.0)
            new = dataclasses.replace(store, **changes, version=store.version + 1)
            if await self.records.store_update(new, store.version):
                return new
        return await self.get(store_id, tenant)

    def _served(self, model: str) -> None:
        if model not in self.known_models():
            served = ", ".join(sorted(self.known_models())) or "none"
            raise InvalidRequest(
                f"model: {model!r} is not a served embedding model ({served})", param="model"
            )

    async def _same_model(self, store: VectorStore, model: str) -> None:
        """A store's vectors are all of the model it was made with: another model's vectors
        (even of the same size) are not comparable with them, so changing it is refused,
        naming both models and the sizes of their vectors, and where to go instead."""
        if model == store.model:
            return
        self._served(model)
        held = store.dimensions or await self._dimensions_of(store.model, store.tenant)
        theirs = await self._dimensions_of(model, store.tenant)
        raise InvalidRequest(
            f"model: vector store {store.id} is embedded by {store.model}"
            f" ({held or '?'} dimensions); {model} makes {theirs or '?'} dimensions, and one"
            f" store's vectors are all of one model: create a new vector store with model"
            f" {model} and add the files to it",
            param="model",
        )

    async def _dimensions_of(self, model: str, tenant: str) -> int | None:
        """The size of ``model``'s vectors: its card's, else one short text embedded through
        the queue (None: it is no longer served, or that job failed)."""
        if model not in self.known_models():
            return None
        declared = self.dimensions(model)
        if declared is not None:
            return declared
        embedder = Embedder(self.queue, self.chunks, model, None, tenant=tenant, priority=10)
        try:
            await embedder.embed(["dimensions"])
        except EmbeddingFailed:
            return None
        return embedder.dimensions

    async def delete(self, store_id: str, tenant: str | None) -> bool:
        await self.get(store_id, tenant)
        await self.chunks.chunks_drop(store_id, None)
        self.searcher.forget(store_id)
        return await self.records.store_delete(store_id, tenant)

    async def counts(self, store: VectorStore) -> dict[str, int]:
        """OpenAI's ``file_counts`` (and the store's bytes as ``usage_bytes``)."""
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0,
                  "usage_bytes": 0}  # fmt: skip
        async for vf in self._files(store.id):
            counts[vf.status] = counts.get(vf.status, 0) + 1
            counts["total"] += 1
            counts["usage_bytes"] += vf.usage_bytes
        return counts

    async def _files(
        self, store_id: str, batch_id: str | None = None
    ) -> AsyncIterator[VectorStoreFile]:
        after = None
        while True:
            page = await self.records.vfile_list(
                VectorFilter(None, store_id, None, after, 1000, "asc")
            )
            for vf in page:
                if batch_id is None or vf.batch_id == batch_id:
                    yield vf
            if len(page) < 1000:
                return
            after = page[-1].id

    # -- files ---------------------------------------------------------------------------------

    async def add_file(
        self,
        store_id: str,
        file_id: str,
        *,
        tenant: str | None,
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> VectorStoreFile:
        store = await self.get(store_id, tenant)
        try:
            await self.files.get(file_id, store.tenant)
        except NotFound:
            raise InvalidRequest(f"file_id: no file {file_id!r}", param="file_id") from None
        vf = VectorStoreFile(
            id=file_id, store_id=store.id, tenant=store.tenant, created_at=self.queue.clock(),
            attributes=_attributes(attributes),
            chunking=check_chunking(chunking_strategy, self.window(store.model)),
            batch_id=batch_id,
        )  # fmt: skip
        if not await self.records.vfile_put(vf):  # already in the store: ingest it again
            old = await self.records.vfile_get(store.id, file_id, None)
            assert old is not None
            vf = dataclasses.replace(
                old, status="in_progress", attributes=vf.attributes, chunking=vf.chunking,
                batch_id=batch_id or old.batch_id, last_error=None, version=old.version + 1,
            )  # fmt: skip
            if not await self.records.vfile_update(vf, old.version):
                raise Conflict(f"file {file_id} of {store_id} changed meanwhile; try again")
        self.ingester.poke()
        return vf

    async def file(self, store_id: str, file_id: str, tenant: str | None) -> VectorStoreFile:
        await self.get(store_id, tenant)
        found = await self.records.vfile_get(store_id, file_id, tenant)
        if found is None:
            raise NotFound(f"no file {file_id!r} in vector store {store_id}", param="file_id")
        return found

    async def file_page(
        self, store_id: str, tenant: str | None, *, status: str | None, after: str | None,
        limit: int, order: str, batch_id: str | None = None,
    ) -> StorePage:  # fmt: skip
        _check_page(limit, order)
        await self.get(store_id, tenant)
        if batch_id is not None:  # a file batch's files: few, listed from the store's
            chosen = [vf async for vf in self._files(store_id, batch_id)
                      if status is None or vf.status == status]  # fmt: skip
            chosen.sort(key=lambda v: v.id, reverse=order == "desc")
            if after is not None:
                chosen = [v for v in chosen if (v.id < after if order == "desc" else v.id > after)]
            return StorePage(chosen[:limit], len(chosen) > limit)
        found = await self.records.vfile_list(
            VectorFilter(None, store_id, status, after, limit + 1, order)
        )
        return StorePage(found[:limit], len(found) > limit)

    async def update_file(
        self, store_id: str, file_id: str, tenant: str | None, attributes: dict[str, Any]
    ) -> VectorStoreFile:
        """New attributes: the file's current chunks are written again with them (a filter
        sees them at once); no text is embedded again."""
        for _ in range(10):
            vf = await self.file(store_id, file_id, tenant)
            new = dataclasses.replace(vf, attributes=_attributes(attributes),
                                      version=vf.version + 1)  # fmt: skip
            if await self.records.vfile_update(new, vf.version):
                await self._reattribute(new)
                return new
        raise Conflict(f"file {file_id} of {store_id} kept changing; try again")

    async def _reattribute(self, vf: VectorStoreFile) -> None:
        if not vf.generation:
            return
        keys = [(vf.id, n) for n in range(vf.chunks)]
        current = await self.chunks.chunks_get(vf.store_id, keys)
        again = [dataclasses.replace(c, generation=vf.generation + 1,
                                     attributes=dict(vf.attributes)) for c in current]  # fmt: skip
        await self.chunks.chunks_put(again)
        await self.chunks.chunks_flip(vf.store_id, vf.id, vf.generation + 1)
        for _ in range(10):
            now = await self.records.vfile_get(vf.store_id, vf.id, None)
            if now is None:
                return
            moved = dataclasses.replace(now, generation=vf.generation + 1, version=now.version + 1)
            if await self.records.vfile_update(moved, now.version):
                return

    async def remove_file(self, store_id: str, file_id: str, tenant: str | None) -> bool:
        """The file's chunks and record (the file itself stays in the Files API, as OpenAI's
        does; newer bytes a source was updated with go, being the store's own)."""
        vf = await self.file(store_id, file_id, tenant)
        await self.chunks.chunks_drop(store_id, file_id)
        removed = await self.records.vfile_delete(store_id, file_id, tenant)
        if vf.content_file_id is not None:
            with contextlib.suppress(NotFound):
                await self.files.delete(vf.content_file_id, vf.tenant)
        return removed

    async def cancel_batch(self, store_id: str, batch_id: str, tenant: str | None) -> None:
        """The batch's files not yet ingested are ``cancelled`` (their old chunks stay)."""
        await self.get(store_id, tenant)
        async for vf in self._files(store_id, batch_id):
            if vf.status == "in_progress":
                cancelled = dataclasses.replace(vf, status="cancelled", version=vf.version + 1)
                await self.records.vfile_update(cancelled, vf.version)

    # -- sources: documents ingested again by name ---------------------------------------------

    async def source(
        self,
        store_id: str,
        tenant: str | None,
        source: str,
        *,
        sha256: str | None = None,
        file_id: str | None = None,
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
    ) -> tuple[str, VectorStoreFile | None]:
        """One document of a directory or a site, by its name (``source``): ``skipped`` when
        the store holds these bytes already (``sha256`` of them, nothing uploaded),
        ``upload_needed`` when it does not and no ``file_id`` came, else ``added`` (a new
        source) or ``updated`` (its file now reads the new bytes: its chunks are made again,
        under a new generation, and the old ones answer searches until they are current)."""
        store = await self.get(store_id, tenant)
        current = await self._by_source(store.id, source)
        if file_id is None:
            if sha256 is None:
                raise InvalidRequest("give sha256 (to compare) or file_id (the new bytes)",
                                     param="sha256")  # fmt: skip
            if current is not None and current.status == "completed":
                held = await self.files.get(current.content_file_id or current.id, store.tenant)
                if held.sha256 == sha256:
                    return "skipped", current
            return "upload_needed", current
        if current is None:
            vf = await self.add_file(
                store.id, file_id, tenant=tenant, attributes=attributes,
                chunking_strategy=chunking_strategy,
            )  # fmt: skip
            for _ in range(10):
                named = dataclasses.replace(vf, source=source, version=vf.version + 1)
                if await self.records.vfile_update(named, vf.version):
                    return "added", named
                fresh = await self.records.vfile_get(store.id, file_id, None)
                assert fresh is not None
                vf = fresh
            raise Conflict(f"file {file_id} of {store_id} kept changing; try again")
        await self.files.get(file_id, store.tenant)  # the new bytes: the caller's own file
        window = self.window(store.model)
        for _ in range(10):
            old = current.content_file_id
            moved = dataclasses.replace(
                current, status="in_progress", content_file_id=file_id, last_error=None,
                attributes=current.attributes if attributes is None else _attributes(attributes),
                chunking=current.chunking if chunking_strategy is None
                else check_chunking(chunking_strategy, window),
                version=current.version + 1,
            )  # fmt: skip
            if await self.records.vfile_update(moved, current.version):
                if old is not None and old != file_id:  # bytes of an earlier update: ours
                    with contextlib.suppress(NotFound):
                        await self.files.delete(old, store.tenant)
                self.ingester.poke()
                return "updated", moved
            fresh = await self.records.vfile_get(store.id, current.id, None)
            if fresh is None:
                raise NotFound(f"the file of {source!r} was removed meanwhile", param="source")
            current = fresh
        raise Conflict(f"the file of {source!r} kept changing; try again")

    async def _by_source(self, store_id: str, source: str) -> VectorStoreFile | None:
        async for vf in self._files(store_id):
            if vf.source == source:
                return vf
        return None

    async def cleanup(self, store_id: str, tenant: str | None, keep: set[str]) -> int:
        """``cleanup: full``: remove every file ingested from a source not in ``keep`` (the
        sources of this ingest); files added by id, with no source, stay."""
        await self.get(store_id, tenant)
        gone = [vf async for vf in self._files(store_id) if vf.source and vf.source not in keep]
        for vf in gone:
            await self.remove_file(store_id, vf.id, tenant)
        return len(gone)

    # -- search --------------------------------------------------------------------------------

    async def search(
        self,
        store_id: str,
        tenant: str | None,
        query: str | list[str],
        *,
        k: int = 10,
        filters: dict[str, Any] | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        store = await self.get(store_id, tenant)
        return await self.searcher.search(
            store, query, k=k, filters=filters, score_threshold=score_threshold
        )


def _check_page(limit: int, order: str) -> None:
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit: must be 1 to 100", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order: asc or desc", param="order")


def _attributes(raw: dict[str, Any] | None) -> dict[str, str | float | bool]:
    """OpenAI's rule: up to 16 keys of at most 64 characters; strings up to 512, numbers,
    booleans."""
    if raw is None:
        return {}
    if len(raw) > 16:
        raise InvalidRequest("attributes: at most 16 keys", param="attributes")
    out: dict[str, str | float | bool] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64:
            raise InvalidRequest(f"attributes: key {key!r} is not 1 to 64 characters",
                                 param="attributes")  # fmt: skip
        if isinstance(value, str) and len(value) > 512:
            raise InvalidRequest(f"attributes.{key}: longer than 512 characters",
                                 param="attributes")  # fmt: skip
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequest(f"attributes.{key}: a string, number or boolean",
                                 param="attributes")  # fmt: skip
        out[key] = value
    return out


def _expiry(expires_after: dict[str, Any] | None, anchor: float) -> float | None:
    if not expires_after:
        return None
    days = expires_after.get("days")
    if (
        expires_after.get("anchor") != "last_active_at"
        or not isinstance(days, int)
        or not (1 <= days <= 365)
    ):
        raise InvalidRequest(
            "expires_after: {anchor: last_active_at, days: 1 to 365}", param="expires_after"
        )
    return anchor + days * 86_400.0
