"""The SQL blob store (``postgresql://…?schema=…``): blobs as rows of ``blob_chunks`` in a
genspool schema, for deployments whose processes share no disk (several hosts, containers).

A writer gathers 1 MiB, then inserts it as the next chunk under a temporary key, one
statement on a pooled connection (no connection is held while the client sends the next
bytes); :meth:`commit` renames every chunk to the blob's key in one statement, so a reader
sees the whole blob or none. A reader fetches one chunk per statement: memory stays at one
chunk whatever the blob's size. Parts of writes whose process died are swept by age.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg

from genspool._ids import random_hex
from genspool.backends._errors import backend_error
from genspool.backends._urls import shown_url
from genspool.backends.postgres._files import Q
from genspool.backends.postgres._pool import Connections, Settings
from genspool.files.blobs import CHUNK_BYTES, BlobStore, BlobWriter, check_key

__all__ = ["PostgresBlobStore"]

_ERRORS = (psycopg.Error,)


class _Writer(BlobWriter):
    def __init__(self, store: PostgresBlobStore, key: str) -> None:
        self._store, self._key = store, key
        self._part = f"{key}.part-{random_hex(6)}"
        self._pending: list[bytes] = []
        self._size = 0
        self._seq = 0
        self._open = True

    async def write(self, chunk: bytes) -> None:
        if not self._open:
            raise RuntimeError("write after commit or abort")
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._pending, self._size = b"".join(self._pending), [], 0
        if data or self._seq == 0:  # an empty blob is one empty chunk, so that it exists
            params = {"key": self._part, "seq": self._seq, "data": data}
            await self._store.run("write", Q["chunk_put"], params)
            self._seq += 1

    async def commit(self) -> None:
        if not self._open:
            raise RuntimeError("commit after commit or abort")
        await self._flush()
        self._open = False
        await self._store.rename(self._part, self._key)

    async def abort(self) -> None:
        if self._open or self._seq:
            self._open, self._pending = False, []
            await self._store.run("abort", Q["blob_delete"], {"key": self._part})


class PostgresBlobStore(BlobStore):
    kind = "PostgreSQL blob store"

    def __init__(self, settings: Settings, shown: str) -> None:
        self.url = self.shown_url = shown
        self.db = Connections(settings, shown)

    @classmethod
    def from_url(cls, url: str) -> PostgresBlobStore:
        """A genspool schema's URL, as for the backend (``?schema=``, ``pool_max=``)."""
        shown = shown_url(url)
        return cls(Settings.from_url(url, shown), shown)

    async def connect(self) -> None:
        try:
            await self.db.open()  # makes the schema's tables, blob_chunks among them
        except _ERRORS as exc:
            raise backend_error(self, "connect", exc) from exc

    async def close(self) -> None:
        await self.db.close()

    async def run(self, what: str, query: bytes, params: dict[str, object]) -> int:
        """One statement; returns the rows it wrote (a driver error as a BackendError)."""
        try:
            return await self.db.count(query, params)
        except _ERRORS as exc:
            raise backend_error(self, what, exc) from exc

    async def rename(self, part: str, key: str) -> None:
        """Make the chunks of ``part`` the blob ``key``'s, replacing any, in one transaction."""
        try:
            async with self.db.conn() as conn, conn.transaction():
                await conn.execute(Q["blob_delete"], {"key": key})
                await conn.execute(Q["blob_rename"], {"key": key, "part": part})
        except _ERRORS as exc:
            raise backend_error(self, "commit", exc) from exc

    async def open_writer(self, key: str) -> BlobWriter:
        return _Writer(self, check_key(key))

    async def open_reader(self, key: str) -> AsyncIterator[bytes] | None:
        try:
            found = await self.db.fetch(Q["chunk_count"], {"key": check_key(key)})
        except _ERRORS as exc:
            raise backend_error(self, "read", exc) from exc
        count = int(found[0][0])
        return self._chunks(key, count) if count else None

    async def _chunks(self, key: str, count: int) -> AsyncIterator[bytes]:
        for seq in range(count):
            try:
                found = await self.db.fetch(Q["chunk_get"], {"key": key, "seq": seq})
            except _ERRORS as exc:
                raise backend_error(self, "read", exc) from exc
            if not found:  # deleted while read: the answer is already on its way
                raise backend_error(self, "read", LookupError(f"{key} was deleted while read"))
            if found[0][0]:
                yield bytes(found[0][0])

    async def delete(self, key: str) -> bool:
        return await self.run("delete", Q["blob_delete"], {"key": check_key(key)}) > 0

    async def sweep(self, before: float) -> int:
        return await self.run("sweep", Q["blob_sweep"], {"before": before})
