"""The directory blob store (``file:///dir``): one file per blob, under ``dir/<tenant>/``.

A write goes to a hidden temporary file in the blob's folder, gathered into 1 MiB writes made
on a worker thread (the event loop never waits for the disk); :meth:`commit` flushes and
fsyncs it, renames it over the blob's name (atomic on POSIX) and fsyncs the folder, so a
crash leaves either the whole blob or none. A process that dies mid-write leaves its temporary
file, which :meth:`DirectoryBlobStore.sweep` removes once it is old.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from genspool._ids import random_hex
from genspool.exceptions import ConfigError
from genspool.files.blobs import CHUNK_BYTES, KEY, BlobStore, BlobWriter, check_key

__all__ = ["DirectoryBlobStore"]

_PART = ".part-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer(BlobWriter):
    def __init__(self, final: Path) -> None:
        self._final = final
        self._part = final.with_name(f".{final.name}{_PART}{random_hex(6)}")
        self._file: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._size = 0

    async def open(self) -> None:
        def opened() -> BinaryIO:
            self._part.parent.mkdir(parents=True, exist_ok=True)
            return self._part.open("xb")

        self._file = await asyncio.to_thread(opened)

    async def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("write after commit or abort")
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._pending, self._size = b"".join(self._pending), [], 0
        if data and self._file is not None:
            await asyncio.to_thread(self._file.write, data)

    async def commit(self) -> None:
        await self._flush()
        file, self._file = self._file, None
        if file is None:
            raise RuntimeError("commit after commit or abort")

        def durable() -> None:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._part, self._final)
            _fsync_dir(self._final.parent)

        await asyncio.to_thread(durable)

    async def abort(self) -> None:
        file, self._file, self._pending = self._file, None, []
        if file is None:
            return

        def drop() -> None:
            file.close()
            self._part.unlink(missing_ok=True)

        await asyncio.to_thread(drop)


class DirectoryBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"

    @classmethod
    def from_url(cls, url: str) -> DirectoryBlobStore:
        """``file:///absolute/dir`` (``file://relative/dir`` is read from the working one)."""
        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"{url!r} names no directory; use file:///path/to/files")
        return cls(path)

    async def connect(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def open_writer(self, key: str) -> BlobWriter:
        writer = _Writer(self._path(key))
        await writer.open()
        return writer

    async def open_reader(self, key: str) -> AsyncIterator[bytes] | None:
        try:
            file = await asyncio.to_thread(self._path(key).open, "rb")
        except FileNotFoundError:
            return None
        return self._chunks(file)

    @staticmethod
    async def _chunks(file: BinaryIO) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                yield chunk
        finally:
            file.close()

    async def delete(self, key: str) -> bool:
        path = self._path(key)

        def remove() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await asyncio.to_thread(remove)

    async def sweep(self, before: float) -> int:
        def old_parts() -> int:
            gone = 0
            for part in self.root.glob(f"*/.*{_PART}*"):
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < before:
                        part.unlink()
                        gone += 1
            return gone

        return await asyncio.to_thread(old_parts)

    def url_of(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    def key_of(self, url: str) -> str | None:
        head = self.url + "/"
        key = url[len(head) :] if url.startswith(head) else ""
        return key if KEY.fullmatch(key) else None
