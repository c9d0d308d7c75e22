"""The vector store methods of :class:`genspool.Client` and :class:`genspool.AsyncClient`.

Mixed into the two clients, sync and async side by side as the pipeline methods are.
:meth:`StoreMethods.ingest_source` sends a document's sha256 first and uploads its bytes only
when the store does not hold them for that source, so ingesting an unchanged directory again
costs one small request per file and no embedding at all.

    with genspool.Client() as client:
        store = client.create_store("handbook")
        done = client.ingest_source(store.id, "guide.md", data, "guide.md")
        if done.file is not None:
            client.wait_files(store.id, [done.file.id])
        hits = client.search(store.id, "how do I start?")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from genspool.client import _store_base as calls
from genspool.client._base import Call, Deadline
from genspool.client._store_base import (
    FileWaiter,
    IngestOutcome,
    OnFile,
    SearchHit,
    StoreFile,
    VectorStore,
)
from genspool.exceptions import WaitTimeout

__all__ = ["AsyncStoreMethods", "StoreMethods"]

T = TypeVar("T")


def _timed_out(store_id: str, waiter: FileWaiter, timeout: float | None) -> WaitTimeout:
    some = ", ".join(sorted(waiter.pending)[:3])
    return WaitTimeout(
        f"{len(waiter.pending)} file(s) of {store_id} still in progress after {timeout} s"
        f" ({some}…)",
        job_id=store_id,
    )


# -- blocking ----------------------------------------------------------------------------------


class StoreMethods:
    """Vector stores, search and ingest by source, for :class:`genspool.Client`."""

    if TYPE_CHECKING:

        def _run(self, call: Call[T]) -> T: ...

    def stores(self, *, limit: int = 100) -> Iterator[VectorStore]:
        """Every vector store, newest first, fetched ``limit`` (up to 100) at a time."""
        pager = calls.store_pager(limit)
        while not pager.done:
            yield from pager.advance(self._run(pager.call()))

    def create_store(
        self,
        name: str | None,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VectorStore:
        """A new store; ``model``: the served embedding model of its vectors (default: the
        server's)."""
        return self._run(calls.create_store(name, model, metadata))

    def store(self, store_id: str) -> VectorStore:
        return self._run(calls.store(store_id))

    def delete_store(self, store_id: str) -> bool:
        """Delete the store and its chunks (its uploaded files stay)."""
        return self._run(calls.delete_store(store_id))

    def search(
        self,
        store_id: str,
        query: str,
        *,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best chunks, best first; ``filters`` (OpenAI's comparison and compound
        filters on attributes) apply before ranking."""
        return self._run(calls.search(store_id, query, k, filters, score_threshold))

    def ingest_source(
        self,
        store_id: str,
        source: str,
        data: bytes,
        filename: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        chunking: Mapping[str, Any] | None = None,
    ) -> IngestOutcome:
        """Ingest one document by its name (``source``: a path or a URL): ``skipped`` when the
        store holds these bytes for it already (nothing uploaded), else the bytes are uploaded
        as ``filename`` and the outcome is ``added`` or ``updated``."""
        found = self._run(calls.compare_source(store_id, source, data))
        if found.outcome == "skipped":
            return found
        uploaded = self._run(calls.upload_source(filename, data))
        return self._run(calls.register_source(store_id, source, uploaded.id, attributes, chunking))

    def cleanup_sources(self, store_id: str, keep: Iterable[str]) -> int:
        """Remove every file ingested from a source not in ``keep`` (``cleanup: full``);
        the number removed."""
        return self._run(calls.cleanup_sources(store_id, list(keep)))

    def store_file(self, store_id: str, file_id: str) -> StoreFile:
        return self._run(calls.store_file(store_id, file_id))

    def wait_files(
        self,
        store_id: str,
        file_ids: Iterable[str],
        *,
        on_update: OnFile | None = None,
        timeout: float | None = None,
        poll_s: float = 0.25,
    ) -> dict[str, StoreFile]:
        """Each file once it is no longer ``in_progress`` (``completed`` or ``failed``), by
        id; ``on_update`` sees each as it ends. :class:`~genspool.exceptions.WaitTimeout`
        after ``timeout`` s."""
        waiter, deadline = FileWaiter(store_id, set(file_ids), on_update), Deadline(timeout)
        while waiter.pending:
            for file_id in waiter.gone(self._in_progress(store_id)):
                waiter.end(self.store_file(store_id, file_id))
            if not waiter.pending:
                break
            if deadline.expired:
                raise _timed_out(store_id, waiter, timeout)
            time.sleep(deadline.pause(poll_s))
        return waiter.ended

    def _in_progress(self, store_id: str) -> set[str]:
        pager, found = calls.in_progress_pager(store_id), set[str]()
        while not pager.done:
            found.update(f.id for f in pager.advance(self._run(pager.call())))
        return found


# -- asyncio -----------------------------------------------------------------------------------


class AsyncStoreMethods:
    """Vector stores, search and ingest by source, for :class:`genspool.AsyncClient`."""

    if TYPE_CHECKING:

        async def _run(self, call: Call[T]) -> T: ...

    async def stores(self, *, limit: int = 100) -> AsyncIterator[VectorStore]:
        """Every vector store, newest first, fetched ``limit`` (up to 100) at a time."""
        pager = calls.store_pager(limit)
        while not pager.done:
            for found in pager.advance(await self._run(pager.call())):
                yield found

    async def create_store(
        self,
        name: str | None,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> VectorStore:
        """A new store; ``model``: the served embedding model of its vectors (default: the
        server's)."""
        return await self._run(calls.create_store(name, model, metadata))

    async def store(self, store_id: str) -> VectorStore:
        return await self._run(calls.store(store_id))

    async def delete_store(self, store_id: str) -> bool:
        """Delete the store and its chunks (its uploaded files stay)."""
        return await self._run(calls.delete_store(store_id))

    async def search(
        self,
        store_id: str,
        query: str,
        *,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best chunks, best first; ``filters`` (OpenAI's comparison and compound
        filters on attributes) apply before ranking."""
        return await self._run(calls.search(store_id, query, k, filters, score_threshold))

    async def ingest_source(
        self,
        store_id: str,
        source: str,
        data: bytes,
        filename: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        chunking: Mapping[str, Any] | None = None,
    ) -> IngestOutcome:
        """Ingest one document by its name (``source``: a path or a URL): ``skipped`` when the
        store holds these bytes for it already (nothing uploaded), else the bytes are uploaded
        as ``filename`` and the outcome is ``added`` or ``updated``."""
        found = await self._run(calls.compare_source(store_id, source, data))
        if found.outcome == "skipped":
            return found
        uploaded = await self._run(calls.upload_source(filename, data))
        call = calls.register_source(store_id, source, uploaded.id, attributes, chunking)
        return await self._run(call)

    async def cleanup_sources(self, store_id: str, keep: Iterable[str]) -> int:
        """Remove every file ingested from a source not in ``keep`` (``cleanup: full``);
        the number removed."""
        return await self._run(calls.cleanup_sources(store_id, list(keep)))

    async def store_file(self, store_id: str, file_id: str) -> StoreFile:
        return await self._run(calls.store_file(store_id, file_id))

    async def wait_files(
        self,
        store_id: str,
        file_ids: Iterable[str],
        *,
        on_update: OnFile | None = None,
        timeout: float | None = None,
        poll_s: float = 0.25,
    ) -> dict[str, StoreFile]:
        """Each file once it is no longer ``in_progress`` (``completed`` or ``failed``), by
        id; ``on_update`` sees each as it ends. :class:`~genspool.exceptions.WaitTimeout`
        after ``timeout`` s."""
        waiter, deadline = FileWaiter(store_id, set(file_ids), on_update), Deadline(timeout)
        while waiter.pending:
            for file_id in waiter.gone(await self._in_progress(store_id)):
                waiter.end(await self.store_file(store_id, file_id))
            if not waiter.pending:
                break
            if deadline.expired:
                raise _timed_out(store_id, waiter, timeout)
            await asyncio.sleep(deadline.pause(poll_s))
        return waiter.ended

    async def _in_progress(self, store_id: str) -> set[str]:
        pager, found = calls.in_progress_pager(store_id), set[str]()
        while not pager.done:
            found.update(f.id for f in pager.advance(await self._run(pager.call())))
        return found
