"""Files: what the Files API and genspool's own code (batch outputs, later RAG) do with files.

:class:`Files` puts the rules in one place above two small parts: a
:class:`~genspool.core.roles.FileStore` keeps each file's record, tenant-scoped, and a
:class:`~genspool.files.blobs.BlobStore` its bytes. A file is written through a
:class:`FileWriter`, from an upload or incrementally by code: chunks stream to the blob store as
they come (memory stays at about one chunk), counted against the size limit and hashed
(SHA-256) on the way; :meth:`FileWriter.commit` makes the blob durable and only then stores the
record, so a listed file always has its bytes. An upload that fails or goes over the limit is
aborted and leaves nothing behind.

Expiry is decided here, on the deployment's clock: an expired file is gone at once for every
reader (404), and :meth:`Files.purge_expired` (run by :meth:`Files.run` in each API process)
deletes its record, then its bytes. A process that dies between the two leaves bytes no record
points to; one that dies mid-upload leaves a part that :meth:`BlobStore.sweep` removes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from genspool._ids import random_hex
from genspool.core.roles import FileFilter, FileObject, FileStore
from genspool.exceptions import GenspoolError, InvalidRequest, NotFound, PayloadTooLarge
from genspool.files.blobs import BlobStore, BlobWriter, blob_key

__all__ = [
    "DEFAULT_EXPIRES_AFTER_S",
    "MAX_LIST_LIMIT",
    "OUTPUT_PURPOSE",
    "PURPOSES",
    "UPLOAD_PURPOSES",
    "FilePage",
    "FileWriter",
    "Files",
    "new_file_id",
]

log = logging.getLogger(__name__)

#: Every purpose a file may have; ``batch_output`` and ``pipeline_output`` are written by
#: genspool, not uploaded.
PURPOSES = (
    "assistants", "batch", "batch_output", "evals", "fine-tune", "fine-tune-results",
    "pipeline_output", "user_data", "vision",
)  # fmt: skip
#: The purposes ``POST /v1/files`` accepts (OpenAI's).
UPLOAD_PURPOSES = ("assistants", "batch", "evals", "fine-tune", "user_data", "vision")
#: What genspool names the files a model's answer is kept in (speech, images): OpenAI's own
#: "any use" purpose, listed by every OpenAI SDK, so ``files.list(purpose="user_data")`` finds
#: them and their ids can be sent on as inputs (a spoken answer to a transcription).
OUTPUT_PURPOSE = "user_data"
#: As OpenAI: batch input files expire after 30 days unless told otherwise; others are kept.
DEFAULT_EXPIRES_AFTER_S = {"batch": 30 * 86_400.0}
MAX_LIST_LIMIT = 10_000
MAX_FILENAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_file_id() -> str:
    """``file-`` and a hex that grows with time (so lists page by id), then randomness."""
    return f"file-{time.time_ns():x}{random_hex(5)}"


def check_purpose(purpose: str, allowed: tuple[str, ...] = PURPOSES) -> str:
    if purpose not in allowed:
        raise InvalidRequest(
            f"purpose: {purpose!r} is not one of {', '.join(allowed)}", param="purpose"
        )
    return purpose


def check_filename(filename: str) -> str:
    if not filename or len(filename) > MAX_FILENAME or _CONTROL.search(filename):
        raise InvalidRequest(
            f"file: the filename must be 1 to {MAX_FILENAME} characters with no control"
            f" characters, not {filename[:80]!r}",
            param="file",
        )
    return filename


@dataclass(frozen=True, slots=True)
class FilePage:
    data: list[FileObject]
    has_more: bool


class FileWriter:
    """One file being written: :meth:`write` chunks, then :meth:`commit` (or :meth:`abort`).
    As an async context manager it aborts when the block raises before a commit."""

    def __init__(self, files: Files, blob: BlobWriter, key: str, file_id: str, tenant: str):
        self.id, self.tenant, self.bytes = file_id, tenant, 0
        self._files, self._blob, self._key = files, blob, key
        self._sha = hashlib.sha256()
        self._done = False

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; over the size limit, abort and raise PayloadTooLarge (413)."""
        self.bytes += len(chunk)
        if self.bytes > self._files.max_bytes:
            await self.abort()
            raise PayloadTooLarge(
                f"file: over the {self._files.max_bytes}-byte limit of one file"
                " (GENSPOOL_MAX_FILE_BYTES); nothing was stored",
                param="file",
            )
        self._sha.update(chunk)
        await self._blob.write(chunk)

    async def commit(
        self, *, filename: str, purpose: str, expires_after_s: float | None = None
    ) -> FileObject:
        """Store the bytes durably, then the record; returns it. Bad arguments abort."""
        try:
            check_filename(filename)
            check_purpose(purpose)
            if expires_after_s is not None and expires_after_s <= 0:
                raise InvalidRequest(
                    "expires_after: seconds must be positive", param="expires_after"
                )
            await self._blob.commit()
        except BaseException:
            await self.abort()
            raise
        self._done = True
        return await self._files._record(self, filename, purpose, expires_after_s)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def key(self) -> str:
        return self._key

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._blob.abort()

    async def __aenter__(self) -> FileWriter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            await self.abort()


class Files:
    """Files of every tenant, over a record store and a blob store; ``clock`` is the
    deployment's (expiry), ``max_bytes`` the size limit of one file."""

    #: Parts of uploads older than this are taken for abandoned by :meth:`purge_expired`.
    SWEEP_AFTER_S = 86_400.0
    PURGE_BATCH = 1000

    def __init__(
        self,
        store: FileStore,
        blobs: BlobStore,
        *,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        purge_every_s: float = 60.0,
    ) -> None:
        self.store, self.blobs, self.max_bytes = store, blobs, max_bytes
        self.clock, self.purge_every_s = clock, purge_every_s

    async def connect(self) -> None:
        await self.blobs.connect()

    async def close(self) -> None:
        await self.blobs.close()

    # -- writing -----------------------------------------------------------------------------

    async def open(self, *, tenant: str) -> FileWriter:
        """A writer of a new file of ``tenant`` (its id is ``writer.id``)."""
        file_id = new_file_id()
        key = blob_key(tenant, file_id)
        return FileWriter(self, await self.blobs.open_writer(key), key, file_id, tenant)

    async def create(
        self,
        chunks: AsyncIterable[bytes],
        *,
        tenant: str,
        filename: str,
        purpose: str,
        expires_after_s: float | None = None,
    ) -> FileObject:
        """A file from a stream of chunks, in one call."""
        check_filename(filename)
        check_purpose(purpose)
        async with await self.open(tenant=tenant) as writer:
            async for chunk in chunks:
                await writer.write(chunk)
            return await writer.commit(
                filename=filename, purpose=purpose, expires_after_s=expires_after_s
            )

    async def _record(
        self, w: FileWriter, filename: str, purpose: str, expires_after_s: float | None
    ) -> FileObject:
        now = self.clock()
        after = expires_after_s or DEFAULT_EXPIRES_AFTER_S.get(purpose)
        record = FileObject(
            id=w.id, tenant=w.tenant, filename=filename, purpose=purpose, bytes=w.bytes,
            sha256=w.sha256, created_at=now, expires_at=None if after is None else now + after,
            blob=self.blobs.url_of(w.key),
        )  # fmt: skip
        try:
            await self.store.file_put(record)
        except BaseException:
            await self.blobs.delete(w.key)
            raise
        return record

    async def save(
        self, data: bytes, *, tenant: str, filename: str, purpose: str = OUTPUT_PURPOSE
    ) -> str:
        """Keep bytes a worker holds (a model's audio or image) as a file; its id."""

        async def once() -> AsyncIterator[bytes]:
            yield data

        made = await self.create(once(), tenant=tenant, filename=filename, purpose=purpose)
        return made.id

    # -- reading -----------------------------------------------------------------------------

    async def get(self, file_id: str, tenant: str | None) -> FileObject:
        """The file, unless it is missing, expired or another tenant's (all: NotFound)."""
        found = await self.store.file_get(file_id, tenant)
        if found is None or self._expired(found):
            raise NotFound(f"no file {file_id!r}", param="file_id")
        return found

    async def page(
        self,
        tenant: str | None,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
        order: str = "desc",
    ) -> FilePage:
        """Up to ``limit`` files (1 to 10,000) after the cursor, by creation, newest first
        unless ``order`` is ``asc``."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit: must be 1 to {MAX_LIST_LIMIT}", param="limit")
        if order not in ("asc", "desc"):
            raise InvalidRequest(f"order: {order!r} is not asc or desc", param="order")
        flt = FileFilter(tenant, purpose, after, limit + 1, order, alive_at=self.clock())
        found = await self.store.file_list(flt)
        return FilePage(found[:limit], len(found) > limit)

    async def content(
        self, file_id: str, tenant: str | None
    ) -> tuple[FileObject, AsyncIterator[bytes]]:
        """The file and its bytes, a chunk at a time."""
        record = await self.get(file_id, tenant)
        key = self.blobs.key_of(record.blob)
        if key is None:
            raise GenspoolError(
                f"{file_id}'s bytes are at {record.blob}, not in this deployment's blob store"
                f" ({self.blobs.url}); set GENSPOOL_FILES_URL to the store they were written to"
            )
        chunks = await self.blobs.open_reader(key)
        if chunks is None:
            raise GenspoolError(f"{file_id}'s bytes are missing from {record.blob}")
        return record, chunks

    async def read(self, file_id: str, tenant: str) -> tuple[str, bytes]:
        """A file's name and whole content (an input a model call sends on, e.g. audio)."""
        record, chunks = await self.content(file_id, tenant)
        return record.filename, b"".join([chunk async for chunk in chunks])

    # -- deleting ----------------------------------------------------------------------------

    async def delete(self, file_id: str, tenant: str | None) -> FileObject:
        """Delete the file (its record, then its bytes); NotFound as :meth:`get`."""
        record = await self.get(file_id, tenant)
        if await self._remove(record) is None:
            raise NotFound(f"no file {file_id!r}", param="file_id")  # deleted meanwhile
        return record

    async def purge_expired(self) -> int:
        """Delete every expired file, and the parts of abandoned uploads; returns the files."""
        now, purged = self.clock(), 0
        while True:
            late = await self.store.files_expired(now, self.PURGE_BATCH)
            for record in late:
                purged += await self._remove(record) is not None
            if len(late) < self.PURGE_BATCH:
                break
        await self.blobs.sweep(time.time() - self.SWEEP_AFTER_S)  # part files: local time
        return purged

    async def run(self) -> None:
        """:meth:`purge_expired` every ``purge_every_s`` until cancelled."""
        while True:
            try:
                if purged := await self.purge_expired():
                    log.info("purged %d expired files", purged)
            except Exception:
                log.exception("purging expired files failed; trying again")
            await asyncio.sleep(self.purge_every_s)

    async def _remove(self, record: FileObject) -> FileObject | None:
        """Delete the record, and the bytes if this caller deleted the record."""
        gone = await self.store.file_delete(record.id, record.tenant)
        key = self.blobs.key_of(record.blob)
        if gone is not None and key is not None:
            await self.blobs.delete(key)
        return gone

    def _expired(self, record: FileObject) -> bool:
        return record.expires_at is not None and record.expires_at <= self.clock()
