"""The FileStore role's contract on every backend, and the Files service over each backend's
default blob store (memory, a directory beside SQLite, chunks in PostgreSQL): tenant scoping,
cursor paging both ways, expiry on an injected clock, streamed writes with their size limit
and checksum, and nothing left behind by a refused or aborted upload. A Redis or NATS server
alone keeps no files (the Files API answers 501 there), so the suite runs on every kind but
those two; with a PostgreSQL store they keep them in the store."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from genspool.core.queue import Queue
from genspool.core.roles import FileFilter, FileObject, FileStore
from genspool.exceptions import InvalidRequest, NotFound, PayloadTooLarge
from genspool.files import Files, open_files
from genspool.files.blobs import blob_key
from genspool.files.directory import DirectoryBlobStore
from genspool.testing.inprocess import FakeClock
from tests.helpers.backends import BACKENDS, kind_url, open_backend

MiB = 1024 * 1024


def record(file_id: str, tenant: str = "acme", **fields: object) -> FileObject:
    base: dict[str, object] = {
        "id": file_id, "tenant": tenant, "filename": "in.jsonl", "purpose": "batch",
        "bytes": 3, "sha256": "ab" * 32, "created_at": 1000.0, "expires_at": None,
        "blob": f"memory://x#{tenant}/{file_id}",
    }  # fmt: skip
    return FileObject(**{**base, **fields})  # type: ignore[arg-type]


#: The kinds that keep files: every one but a Redis or NATS server alone.
FILE_KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=FILE_KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def store_of(queue: Queue) -> FileStore:
    files = queue.storage.files
    assert files is not None
    return files


async def chunks_of(data: bytes, sizes: Iterable[int]) -> AsyncIterator[bytes]:
    """``data`` in chunks of the given sizes, in turn (as a network hands them over)."""
    at, sizes = 0, list(sizes)
    while at < len(data):
        for size in sizes:
            yield data[at : at + size]
            at += size
            await asyncio.sleep(0)


@pytest.mark.parametrize("kind", ["redis", "nats", "redis+postgres", "nats+postgres"])
def test_a_queue_server_alone_keeps_no_files(
    kind: str, namespaced_url: Callable[[str], str]
) -> None:
    """Decided when the roles are composed (nothing is connected): alone, a Redis or NATS
    server has no FileStore; split, the files live with the record of jobs, in the store."""
    storage = open_backend(kind_url(kind, namespaced_url))
    if "+" in kind:
        assert storage.files is not None and storage.files is storage.store
    else:
        assert storage.files is None


async def test_records_are_tenant_scoped(queue: Queue) -> None:
    files = store_of(queue)
    await files.file_put(record("file-01", "acme"))
    await files.file_put(record("file-02", "beta", purpose="user_data", bytes=0))
    assert await files.file_get("file-01", "acme") == record("file-01", "acme")
    assert await files.file_get("file-01", "beta") is None
    assert await files.file_get("file-01", None) == record("file-01", "acme")  # an admin
    assert await files.file_get("file-zz", None) is None
    assert await files.file_delete("file-01", "beta") is None
    assert await files.file_delete("file-01", "acme") == record("file-01", "acme")
    assert await files.file_delete("file-01", "acme") is None
    assert [f.id for f in await files.file_list(FileFilter())] == ["file-02"]


async def test_lists_page_by_id_both_ways_with_filters(queue: Queue) -> None:
    files = store_of(queue)
    ids = [f"file-{i:02d}" for i in range(7)]
    for i, file_id in enumerate(ids):
        purpose = "batch" if i % 2 == 0 else "user_data"
        expires = 2000.0 if i == 4 else None
        await files.file_put(record(file_id, purpose=purpose, expires_at=expires))
    await files.file_put(record("file-99", "beta"))

    async def page(**kw: object) -> list[str]:
        return [f.id for f in await files.file_list(FileFilter(tenant="acme", **kw))]  # type: ignore[arg-type]

    assert await page() == ids[::-1]
    assert await page(limit=3) == ids[:-4:-1]
    assert await page(after="file-04", limit=3) == ["file-03", "file-02", "file-01"]
    assert await page(order="asc", after="file-04") == ["file-05", "file-06"]
    assert await page(purpose="user_data") == ["file-05", "file-03", "file-01"]
    assert "file-04" in await page(alive_at=1999.0)
    assert "file-04" not in await page(alive_at=2000.0)  # expired at its expires_at
    newest = await files.file_list(FileFilter(limit=1))  # every tenant's: an admin
    assert [f.id for f in newest] == ["file-99"]


async def test_expired_records_oldest_first(queue: Queue) -> None:
    files = store_of(queue)
    await files.file_put(record("file-a", expires_at=300.0))
    await files.file_put(record("file-b", "beta", expires_at=100.0))
    await files.file_put(record("file-c", expires_at=900.0))
    await files.file_put(record("file-d"))
    assert [f.id for f in await files.files_expired(300.0, 10)] == ["file-b", "file-a"]
    assert [f.id for f in await files.files_expired(1e9, 1)] == ["file-b"]


# -- the Files service over the backend's own blob store --------------------------------------


def service(queue: Queue, clock: FakeClock, max_bytes: int = 8 * MiB) -> Files:
    return open_files(store_of(queue), max_bytes=max_bytes, clock=clock)


async def read_all(files: Files, file_id: str, tenant: str | None) -> bytes:
    _, chunks = await files.content(file_id, tenant)
    return b"".join([c async for c in chunks])


async def leftovers(files: Files, tenant: str, file_id: str) -> list[str]:
    """What a blob store holds for a file: its blob, and for a directory any part file."""
    found = []
    if await files.blobs.open_reader(blob_key(tenant, file_id)) is not None:
        found.append("blob")
    if isinstance(files.blobs, DirectoryBlobStore):
        found += [p.name for p in files.blobs.root.rglob("*") if p.is_file()]
    return found


async def test_a_streamed_file_round_trips_with_its_checksum(queue: Queue) -> None:
    files = service(queue, FakeClock(5000.0))
    await files.connect()
    try:
        data = os.urandom(3 * MiB + 12345)
        made = await files.create(
            chunks_of(data, [65536, 1, 700_000]), tenant="acme", filename="räw.bin",
            purpose="user_data",
        )  # fmt: skip
        assert (made.bytes, made.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert (made.created_at, made.expires_at, made.status) == (5000.0, None, "processed")
        assert await files.get(made.id, "acme") == made
        assert await read_all(files, made.id, "acme") == data
        assert await read_all(files, made.id, None) == data  # an admin
        for other in (files.get(made.id, "beta"), files.content(made.id, "beta")):
            with pytest.raises(NotFound):
                await other
        with pytest.raises(NotFound):
            await files.delete(made.id, "beta")
        empty = await files.create(
            chunks_of(b"", [1]), tenant="acme", filename="e", purpose="batch"
        )
        assert await read_all(files, empty.id, "acme") == b""
        assert empty.expires_at == 5000.0 + 30 * 86_400  # batch input: 30 days by default
        assert (await files.delete(made.id, "acme")).id == made.id
        assert await leftovers(files, "acme", made.id) == [empty.id] * isinstance(
            files.blobs, DirectoryBlobStore
        )
        with pytest.raises(NotFound):
            await files.content(made.id, "acme")
    finally:
        await files.close()


async def test_over_the_limit_nothing_is_left(queue: Queue) -> None:
    files = service(queue, FakeClock(), max_bytes=2 * MiB)
    await files.connect()
    try:
        writer = await files.open(tenant="acme")
        with pytest.raises(PayloadTooLarge, match="2097152-byte limit"):
            async for chunk in chunks_of(os.urandom(3 * MiB), [300_000]):
                await writer.write(chunk)
        assert await leftovers(files, "acme", writer.id) == []
        async with await files.open(tenant="acme") as bad:
            await bad.write(b"x" * 100)
            with pytest.raises(InvalidRequest, match="purpose"):
                await bad.commit(filename="f", purpose="nonsense")
        assert await leftovers(files, "acme", bad.id) == []
        assert (await files.page("acme")).data == []
    finally:
        await files.close()


async def test_an_output_file_is_written_line_by_line(queue: Queue) -> None:
    """What batches do: a file written incrementally by code, then listed with its purpose."""
    files = service(queue, FakeClock())
    await files.connect()
    try:
        lines = [b'{"custom_id": "%d"}\n' % i for i in range(2000)]
        async with await files.open(tenant="acme") as writer:
            for line in lines:
                await writer.write(line)
            made = await writer.commit(filename="out.jsonl", purpose="batch_output")
        page = await files.page("acme", purpose="batch_output")
        assert [f.id for f in page.data] == [made.id] and not page.has_more
        assert await read_all(files, made.id, "acme") == b"".join(lines)
    finally:
        await files.close()


async def test_expired_files_are_gone_then_purged(queue: Queue) -> None:
    clock = FakeClock(10_000.0)
    files = service(queue, clock)
    await files.connect()
    try:
        brief = await files.create(
            chunks_of(b"short-lived", [4]), tenant="acme", filename="a", purpose="user_data",
            expires_after_s=3600,
        )  # fmt: skip
        kept = await files.create(
            chunks_of(b"kept", [4]), tenant="acme", filename="b", purpose="vision"
        )
        assert brief.expires_at == 13_600.0
        clock.advance(3600)
        for gone in (files.get(brief.id, "acme"), files.content(brief.id, None)):
            with pytest.raises(NotFound):
                await gone
        assert [f.id for f in (await files.page("acme")).data] == [kept.id]
        assert await files.purge_expired() == 1
        assert await files.purge_expired() == 0
        assert await files.store.file_get(brief.id, None) is None
        assert await files.blobs.open_reader(blob_key("acme", brief.id)) is None
        assert await read_all(files, kept.id, "acme") == b"kept"
    finally:
        await files.close()


async def test_two_deletes_at_once_delete_once(queue: Queue) -> None:
    files = service(queue, FakeClock())
    await files.connect()
    try:
        made = await files.create(
            chunks_of(b"x", [1]), tenant="acme", filename="f", purpose="batch"
        )
        outcomes = await asyncio.gather(
            files.delete(made.id, "acme"), files.delete(made.id, None), return_exceptions=True
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["FileObject", "NotFound"]
    finally:
        await files.close()


async def test_pages_cover_every_file_once(queue: Queue) -> None:
    files = service(queue, FakeClock())
    await files.connect()
    try:
        made = [
            (await files.create(chunks_of(b"%d" % i, [8]), tenant="acme", filename="f",
                                purpose="batch")).id
            for i in range(12)
        ]  # fmt: skip
        seen: list[str] = []
        after = None
        while True:
            page = await files.page("acme", after=after, limit=5, order="asc")
            seen += [f.id for f in page.data]
            if not page.has_more:
                break
            after = page.data[-1].id
        assert seen == sorted(made) and len(set(made)) == 12
    finally:
        await files.close()
