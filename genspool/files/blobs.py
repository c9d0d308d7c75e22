"""The blob store interface: where a file's bytes live, streamed in and out a chunk at a time.

A :class:`BlobStore` moves bytes under a key and knows nothing of files, tenants or purposes
(litestar's stores: a small ABC over bytes). A write goes through a :class:`BlobWriter` that
makes nothing visible until :meth:`~BlobWriter.commit`, and leaves nothing behind after
:meth:`~BlobWriter.abort`; a read is an async iterator of chunks. Stores are chosen by URL
(:func:`blob_store_from_url`), their modules imported only when used:

* ``file:///dir``: a directory (the default, beside a SQLite database), :mod:`.directory`;
* ``postgresql://…?schema=…``: chunks in a table of that schema, for deployments whose
  processes share no disk, :mod:`.postgres`;
* ``memory://name``: this process's memory, for tests, :mod:`.memory`.

Keys are ``<tenant>/<file id>`` (:func:`blob_key`), so each tenant's blobs sit apart.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from genspool.backends import shown_url
from genspool.exceptions import ConfigError

__all__ = ["CHUNK_BYTES", "BlobStore", "BlobWriter", "blob_key", "blob_store_from_url"]

#: How much a writer gathers before it writes, and a reader hands out at a time.
CHUNK_BYTES = 1024 * 1024

_SCHEMES = {
    "file": "genspool.files.directory:DirectoryBlobStore",
    "memory": "genspool.files.memory:MemoryBlobStore",
    "postgresql": "genspool.files.postgres:PostgresBlobStore",
    "postgres": "genspool.files.postgres:PostgresBlobStore",
}
_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY = re.compile(r"[A-Za-z0-9_-]{1,80}/[A-Za-z0-9_-]{1,80}")


def blob_key(tenant: str, file_id: str) -> str:
    """``<tenant>/<file id>``; a tenant name that is not plain letters, digits, ``-`` and
    ``_`` is replaced by a digest of it, so that no name reaches a path as it is."""
    if not _PLAIN.fullmatch(file_id):
        raise ValueError(f"file id {file_id!r} is not letters, digits, - and _")
    folder = (
        tenant
        if _PLAIN.fullmatch(tenant)
        else "t_" + hashlib.sha256(tenant.encode()).hexdigest()[:40]
    )
    return f"{folder}/{file_id}"


def check_key(key: str) -> str:
    """``key`` if it has the shape :func:`blob_key` makes (no path can escape a store)."""
    if not KEY.fullmatch(key):
        raise ValueError(f"blob key {key!r} is not <tenant>/<file id>")
    return key


class BlobWriter(ABC):
    """One blob being written: nothing is visible under its key before :meth:`commit`."""

    @abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    async def commit(self) -> None:
        """Make the bytes written so far the blob's, durably and at once (a reader sees all of
        it or nothing); replaces a blob of the same key."""

    @abstractmethod
    async def abort(self) -> None:
        """Drop what was written; nothing is left behind. Harmless after commit or abort."""


class BlobStore(ABC):
    """Bytes by key. ``url`` is the store's URL as it may be shown (no password)."""

    url: str

    async def connect(self) -> None:  # noqa: B027 - a store with no connection needs none
        """Open connections, create the directory or table; idempotent."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""

    @abstractmethod
    async def open_writer(self, key: str) -> BlobWriter: ...

    @abstractmethod
    async def open_reader(self, key: str) -> AsyncIterator[bytes] | None:
        """The blob's chunks, in order; None when there is no blob under ``key``."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the blob; returns whether there was one."""

    async def sweep(self, before: float) -> int:
        """Remove the parts of writes begun before ``before`` (Unix time) and never committed
        or aborted (their process died); returns how many. By default there are none."""
        return 0

    def url_of(self, key: str) -> str:
        """The URL a file's record keeps for the blob under ``key``: the store's, and the key
        as its fragment (a directory store makes it a path)."""
        return f"{self.url}#{key}"

    def key_of(self, url: str) -> str | None:
        """The key of a blob URL of this store; None for another store's URL (the file was
        written where the deployment no longer keeps its blobs)."""
        head, _, key = url.rpartition("#")
        return key if head == self.url and KEY.fullmatch(key) else None


def blob_store_from_url(url: str) -> BlobStore:
    """The blob store at ``url`` (``file://``, ``postgresql://``, ``memory://``)."""
    scheme = url.partition("://")[0].split("+", 1)[0] if "://" in url else ""
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigError(
            f"unsupported blob store URL {shown_url(url)!r} (GENSPOOL_FILES_URL): the scheme"
            f" must be one of {known}"
        )
    module, _, name = target.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        hint = 'pip install "genspool[postgres]"'
        raise ConfigError(f"the {scheme}:// blob store needs {exc.name}; {hint}") from exc
    store: BlobStore = cls.from_url(url)
    return store
