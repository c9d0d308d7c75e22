"""The in-memory blob store (``memory://name``): blobs in this process's memory, for tests and
for the in-memory backend (whose files go with it). ``memory://name`` is shared by every store
opened with that URL in this process, as the in-memory backend's named stores are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from genspool.files.blobs import CHUNK_BYTES, BlobStore, BlobWriter, check_key

__all__ = ["MemoryBlobStore"]

_NAMED: dict[str, dict[str, bytes]] = {}


class _Writer(BlobWriter):
    def __init__(self, blobs: dict[str, bytes], key: str) -> None:
        self._blobs, self._key = blobs, key
        self._parts: list[bytes] | None = []

    async def write(self, chunk: bytes) -> None:
        if self._parts is None:
            raise RuntimeError("write after commit or abort")
        self._parts.append(bytes(chunk))

    async def commit(self) -> None:
        if self._parts is None:
            raise RuntimeError("commit after commit or abort")
        self._blobs[self._key] = b"".join(self._parts)
        self._parts = None

    async def abort(self) -> None:
        self._parts = None


class MemoryBlobStore(BlobStore):
    def __init__(self, name: str | None = None) -> None:
        self.url = f"memory://{name or ''}"
        self._blobs = _NAMED.setdefault(name, {}) if name else {}

    @classmethod
    def from_url(cls, url: str) -> MemoryBlobStore:
        parts = urlsplit(url)
        return cls((parts.netloc + parts.path).strip("/") or None)

    async def open_writer(self, key: str) -> BlobWriter:
        return _Writer(self._blobs, check_key(key))

    async def open_reader(self, key: str) -> AsyncIterator[bytes] | None:
        data = self._blobs.get(check_key(key))
        return None if data is None else self._chunks(data)

    @staticmethod
    async def _chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]

    async def delete(self, key: str) -> bool:
        return self._blobs.pop(check_key(key), None) is not None
