"""The VectorStoreRecords and ChunkStore roles' contract on every backend that keeps vector stores
(memory, SQLite, PostgreSQL, and the PostgreSQL store of a Redis or NATS deployment): whole
records back as stored, tenant scoping, paging by id both ways, the compare-and-set of updates
(also when two writers race), a store's files going with it, one record per file of a store;
chunks written under a generation that is invisible until its flip, a flip that retires the
other generations, the revision that moves on each flip and drop, vectors back byte for byte,
and the embedding cache that keeps its first writer."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import struct
from collections.abc import Callable

import pytest

from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore, VectorFilter, VectorStoreRecords
from genspool.core.vectors import Chunk, VectorStore, VectorStoreFile
from tests.helpers.backends import BACKENDS, kind_url, open_backend

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]
DIMS = 384


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def records_of(queue: Queue) -> VectorStoreRecords:
    vectors = queue.storage.vectors
    assert vectors is not None
    return vectors


def chunks_of(queue: Queue) -> ChunkStore:
    chunks = queue.storage.chunks
    assert chunks is not None
    return chunks


def vstore(store_id: str, tenant: str = "acme", **fields: object) -> VectorStore:
    base = VectorStore(store_id, tenant, created_at=1000.0, model="embed", dimensions=DIMS)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def vfile(
    file_id: str, store_id: str = "vs_01", tenant: str = "acme", **fields: object
) -> VectorStoreFile:
    base = VectorStoreFile(file_id, store_id, tenant, created_at=1000.0)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def vector(seed: int) -> bytes:
    rng = random.Random(seed)
    return struct.pack(f"<{DIMS}f", *(rng.uniform(-1, 1) for _ in range(DIMS)))


def chunk(file_id: str, generation: int, seq: int, store_id: str = "vs_01") -> Chunk:
    text = f"{file_id} g{generation} #{seq}"
    return Chunk(
        store_id, file_id, generation, seq, text, start=seq * 100, end=seq * 100 + len(text),
        tokens=7, vector=vector(hash((store_id, file_id, generation, seq))),
        page=seq // 3 if seq % 2 else None, headings=("Guide", f"Part {seq}"),
        attributes={"lang": "en", "year": 2024.0, "draft": seq % 2 == 0},
    )  # fmt: skip


def keys(chunks: list[Chunk]) -> list[tuple[str, int, int]]:
    return [(c.file_id, c.generation, c.seq) for c in chunks]


async def current(store: ChunkStore, store_id: str = "vs_01") -> list[tuple[str, int, int]]:
    return keys(await store.chunks_current(store_id, None, 10_000))


@pytest.mark.parametrize("kind", ["redis", "nats", "redis+postgres", "nats+postgres"])
def test_a_queue_server_alone_keeps_no_vector_stores(
    kind: str, namespaced_url: Callable[[str], str]
) -> None:
    storage = open_backend(kind_url(kind, namespaced_url))
    if "+" in kind:
        assert storage.vectors is storage.store  # type: ignore[comparison-overlap]
        assert storage.chunks is storage.store  # type: ignore[comparison-overlap]
    else:
        assert storage.vectors is None and storage.chunks is None


# -- stores and files ------------------------------------------------------------------------


async def test_records_come_back_whole_and_tenant_scoped(queue: Queue) -> None:
    records = records_of(queue)
    full = vstore(
        "vs_01", name="docs", metadata={"team": "search"},
        expires_after={"anchor": "last_active_at", "days": 7}, expires_at=2000.5,
        last_active_at=1500.25, status="in_progress", version=2,
    )  # fmt: skip
    await records.store_put(full)
    await records.store_put(vstore("vs_02", "beta"))
    assert await records.store_get("vs_01", "acme") == full
    assert await records.store_get("vs_01", None) == full  # an admin
    assert await records.store_get("vs_01", "beta") is None
    assert await records.store_get("vs_99", None) is None
    whole = vfile(
        "file-1", status="failed", attributes={"lang": "en", "year": 2024.0, "public": True},
        chunking={"type": "static", "static": {"max_chunk_size_tokens": 800,
                                               "chunk_overlap_tokens": 400}},
        usage_bytes=1234, last_error={"code": "server_error", "message": "boom"},
        batch_id="vsfb_1", source="https://example.com/a", content_sha256="ab" * 32,
        generation=3, pending_generation=4, chunks=12, owner="ingest-a", lease_until=1030.0,
        version=5,
    )  # fmt: skip
    assert await records.vfile_put(whole)
    assert await records.vfile_get("vs_01", "file-1", "acme") == whole
    assert await records.vfile_get("vs_01", "file-1", None) == whole
    assert await records.vfile_get("vs_01", "file-1", "beta") is None
    assert await records.vfile_get("vs_02", "file-1", None) is None


async def test_stores_page_by_id_both_ways_per_tenant(queue: Queue) -> None:
    records = records_of(queue)
    for i in range(25):
        await records.store_put(vstore(f"vs_{i:03d}", "beta" if i % 7 == 3 else "acme"))
    acme = [f"vs_{i:03d}" for i in range(25) if i % 7 != 3]
    for order, expected in (("desc", acme[::-1]), ("asc", acme)):
        seen: list[str] = []
        after = None
        while page := await records.store_list(VectorFilter("acme", after=after, limit=4,
                                                            order=order)):  # fmt: skip
            assert len(page) <= 4
            seen += [s.id for s in page]
            after = page[-1].id
        assert seen == expected
    beta = await records.store_list(VectorFilter("beta", order="asc"))
    assert [s.id for s in beta] == ["vs_003", "vs_010", "vs_017", "vs_024"]
    everyone = await records.store_list(VectorFilter(None, after="vs_010", limit=3))
    assert [s.id for s in everyone] == ["vs_009", "vs_008", "vs_007"]


async def test_an_update_is_written_only_over_the_version_it_was_decided_from(
    queue: Queue,
) -> None:
    records = records_of(queue)
    await records.store_put(vstore("vs_01"))
    renamed = vstore("vs_01", name="docs", version=1)
    assert await records.store_update(renamed, 0)
    assert not await records.store_update(vstore("vs_01", name="stale", version=1), 0)
    assert await records.store_get("vs_01", None) == renamed
    assert not await records.store_update(vstore("vs_missing", version=1), 0)
    assert await records.vfile_put(vfile("file-1"))
    done = vfile("file-1", status="completed", chunks=3, version=1)
    assert await records.vfile_update(done, 0)
    assert not await records.vfile_update(vfile("file-1", status="failed", version=1), 0)
    assert await records.vfile_get("vs_01", "file-1", None) == done
    assert not await records.vfile_update(vfile("file-9", version=1), 0)


async def test_of_two_writers_from_one_version_one_wins(queue: Queue) -> None:
    records = records_of(queue)
    await records.store_put(vstore("vs_01"))
    await records.vfile_put(vfile("file-1"))
    a, b = vstore("vs_01", name="a", version=1), vstore("vs_01", name="b", version=1)
    wins = await asyncio.gather(records.store_update(a, 0), records.store_update(b, 0))
    assert sorted(wins) == [False, True]
    assert await records.store_get("vs_01", None) == (a if wins[0] else b)
    done = vfile("file-1", status="completed", version=1)
    cancelled = vfile("file-1", status="cancelled", version=1)
    wins = await asyncio.gather(records.vfile_update(done, 0), records.vfile_update(cancelled, 0))
    assert sorted(wins) == [False, True]
    assert await records.vfile_get("vs_01", "file-1", None) == (done if wins[0] else cancelled)


async def test_a_file_is_added_to_a_store_once(queue: Queue) -> None:
    records = records_of(queue)
    first = vfile("file-1", attributes={"v": 1.0})
    assert await records.vfile_put(first)
    assert not await records.vfile_put(vfile("file-1", attributes={"v": 2.0}))
    assert await records.vfile_get("vs_01", "file-1", None) == first
    racing = [vfile("file-2", batch_id="a"), vfile("file-2", batch_id="b")]
    assert sorted(await asyncio.gather(*map(records.vfile_put, racing))) == [False, True]
    assert await records.vfile_put(vfile("file-1", "vs_02"))  # the same file in another store


async def test_deleting_a_store_deletes_its_files(queue: Queue) -> None:
    records = records_of(queue)
    for store_id in ("vs_01", "vs_02"):
        await records.store_put(vstore(store_id))
        for i in range(3):
            await records.vfile_put(vfile(f"file-{i}", store_id))
    assert not await records.store_delete("vs_01", "beta")
    assert await records.store_delete("vs_01", "acme")
    assert not await records.store_delete("vs_01", None)
    assert await records.store_get("vs_01", None) is None
    assert await records.vfile_list(VectorFilter(None, store_id="vs_01")) == []
    assert len(await records.vfile_list(VectorFilter(None, store_id="vs_02"))) == 3
    assert not await records.vfile_delete("vs_02", "file-0", "beta")
    assert await records.vfile_delete("vs_02", "file-0", "acme")
    assert not await records.vfile_delete("vs_02", "file-0", None)
    assert await records.vfile_get("vs_02", "file-0", None) is None


async def test_files_list_by_store_and_by_status_across_stores(queue: Queue) -> None:
    records = records_of(queue)
    statuses = ["in_progress", "completed", "failed"]
    for i in range(12):
        for store_id, tenant in (("vs_01", "acme"), ("vs_02", "beta")):
            file_id = f"file-{i:02d}{store_id[-1]}"
            await records.vfile_put(vfile(file_id, store_id, tenant, status=statuses[i % 3]))
    mine = [f"file-{i:02d}1" for i in range(12)]
    for order, expected in (("desc", mine[::-1]), ("asc", mine)):
        seen: list[str] = []
        after = None
        flt = VectorFilter("acme", store_id="vs_01", limit=5, order=order)
        while page := await records.vfile_list(dataclasses.replace(flt, after=after)):
            seen += [f.id for f in page]
            after = page[-1].id
        assert seen == expected
    assert await records.vfile_list(VectorFilter("beta", store_id="vs_01")) == []
    done = await records.vfile_list(VectorFilter(None, store_id="vs_02", status="completed"))
    assert [f.id for f in done] == [f"file-{i:02d}2" for i in (10, 7, 4, 1)]
    scan = VectorFilter(None, status="in_progress", limit=3, order="asc")
    first = await records.vfile_list(scan)
    assert [(f.store_id, f.id) for f in first] == [
        ("vs_01", "file-001"), ("vs_02", "file-002"), ("vs_01", "file-031")
    ]  # fmt: skip
    rest = await records.vfile_list(dataclasses.replace(scan, after=first[-1].id, limit=100))
    assert [f.id for f in rest] == [f"file-{i:02d}{s}" for i in (3, 6, 9) for s in "12"][1:]
    beta = await records.vfile_list(VectorFilter("beta", status="failed", limit=100))
    assert [f.id for f in beta] == [f"file-{i:02d}2" for i in (11, 8, 5, 2)]


# -- chunks ----------------------------------------------------------------------------------


async def test_a_generation_is_current_only_from_its_flip(queue: Queue) -> None:
    store = chunks_of(queue)
    assert await store.chunks_revision("vs_01") == 0
    await store.chunks_put([chunk("file-a", 1, seq) for seq in range(3)])
    assert await current(store) == []
    assert await store.chunks_revision("vs_01") == 0  # a put moves nothing
    r1 = await store.chunks_flip("vs_01", "file-a", 1)
    assert r1 == await store.chunks_revision("vs_01") and r1 > 0
    assert await current(store) == [("file-a", 1, s) for s in range(3)]
    await store.chunks_put([chunk("file-a", 2, seq) for seq in range(2)])
    assert await current(store) == [("file-a", 1, s) for s in range(3)]
    assert await store.chunks_revision("vs_01") == r1
    r2 = await store.chunks_flip("vs_01", "file-a", 2)
    assert r2 > r1
    assert await current(store) == [("file-a", 2, 0), ("file-a", 2, 1)]
    r3 = await store.chunks_flip("vs_01", "file-a", 1)  # generation 1's chunks are gone
    assert r3 > r2 and await current(store) == []
    assert await store.chunks_revision("vs_02") == 0


async def test_a_chunk_comes_back_as_written(queue: Queue) -> None:
    store = chunks_of(queue)
    written = [chunk("file-a", 1, 0), chunk("file-a", 1, 1), chunk("file-a", 1, 2, "vs_02")]
    await store.chunks_put(written)
    await store.chunks_flip("vs_01", "file-a", 1)
    await store.chunks_flip("vs_02", "file-a", 1)
    assert await store.chunks_current("vs_01", None, 10) == written[:2]
    assert await store.chunks_current("vs_02", None, 10) == written[2:]
    got = (await store.chunks_current("vs_01", None, 1))[0]
    assert got.vector == written[0].vector and len(got.vector) == DIMS * 4
    replaced = dataclasses.replace(written[0], text="new", vector=vector(-1), page=9)
    await store.chunks_put([dataclasses.replace(written[0], text="older"), replaced])
    assert (await store.chunks_current("vs_01", None, 1))[0] == replaced


async def test_chunks_get_returns_current_chunks_in_the_order_asked(queue: Queue) -> None:
    store = chunks_of(queue)
    await store.chunks_put([chunk(f, 1, seq) for f in ("file-a", "file-b") for seq in range(4)])
    await store.chunks_put([chunk("file-c", 1, 0), chunk("file-b", 2, 0)])
    await store.chunks_flip("vs_01", "file-a", 1)
    await store.chunks_flip("vs_01", "file-b", 1)
    asked = [("file-b", 3), ("file-a", 0), ("file-x", 0), ("file-c", 0), ("file-a", 9),
             ("file-a", 2), ("file-b", 0)]  # fmt: skip
    got = await store.chunks_get("vs_01", asked)
    assert keys(got) == [("file-b", 1, 3), ("file-a", 1, 0), ("file-a", 1, 2), ("file-b", 1, 0)]
    assert got[1] == chunk("file-a", 1, 0)
    assert await store.chunks_get("vs_02", asked) == []
    assert await store.chunks_get("vs_01", []) == []
    many = [("file-a", 1)] + [(f"file-n{i}", i) for i in range(1200)] + [("file-b", 2)]
    assert keys(await store.chunks_get("vs_01", many)) == [("file-a", 1, 1), ("file-b", 1, 2)]


async def test_chunks_drop_a_file_or_the_whole_store(queue: Queue) -> None:
    store = chunks_of(queue)
    for f in ("file-a", "file-b", "file-c"):
        await store.chunks_put([chunk(f, 1, 0), chunk(f, 1, 1), chunk(f, 2, 0)])
        await store.chunks_flip("vs_01", f, 1)
    await store.chunks_put([chunk("file-a", 1, 0, "vs_02")])
    await store.chunks_flip("vs_02", "file-a", 1)
    before = await store.chunks_revision("vs_01")
    dropped = await store.chunks_drop("vs_01", "file-b")
    assert dropped > before and dropped == await store.chunks_revision("vs_01")
    assert {f for f, _, _ in await current(store)} == {"file-a", "file-c"}
    assert await store.chunks_flip("vs_01", "file-b", 2) > dropped  # its pending one went too
    assert {f for f, _, _ in await current(store)} == {"file-a", "file-c"}
    last = await store.chunks_drop("vs_01", None)
    assert await current(store) == []
    assert await store.chunks_flip("vs_01", "file-a", 2) > last
    assert await current(store) == []
    assert await current(store, "vs_02") == [("file-a", 1, 0)]
    assert await store.chunks_drop("vs_03", None) == 1  # a store never written: moves too


async def test_a_thousand_chunks_page_in_order(queue: Queue) -> None:
    store = chunks_of(queue)
    files = [f"file-{i}" for i in range(4)]
    written = [chunk(f, 1, seq) for f in reversed(files) for seq in range(250)]
    await store.chunks_put(written)
    for f in files:
        await store.chunks_flip("vs_01", f, 1)
    seen: list[Chunk] = []
    after = None
    while page := await store.chunks_current("vs_01", after, 128):
        assert len(page) <= 128
        seen += page
        after = (page[-1].file_id, page[-1].seq)
    assert keys(seen) == [(f, 1, seq) for f in files for seq in range(250)]
    by_key = {(c.file_id, c.seq): c.vector for c in written}
    assert all(c.vector == by_key[(c.file_id, c.seq)] for c in seen)


# -- the embedding cache ---------------------------------------------------------------------


async def test_the_cache_keeps_the_first_vector_of_a_key(queue: Queue) -> None:
    store = chunks_of(queue)
    assert await store.cache_get("embed", DIMS, ["k1"]) == {}
    await store.cache_put("embed", DIMS, {"k1": vector(1), "k2": vector(2)})
    await store.cache_put("embed", DIMS, {"k1": vector(99), "k3": vector(3)})
    await store.cache_put("embed", DIMS, {})
    got = await store.cache_get("embed", DIMS, ["k3", "k1", "k9", "k2"])
    assert got == {"k1": vector(1), "k2": vector(2), "k3": vector(3)}
    assert await store.cache_get("embed", 256, ["k1"]) == {}
    assert await store.cache_get("other", DIMS, ["k1"]) == {}
    assert await store.cache_get("embed", DIMS, []) == {}
    many = {f"h{i}": vector(i) for i in range(1500)}
    await store.cache_put("embed", DIMS, many)
    found = await store.cache_get("embed", DIMS, [*many, "k1", "missing"])
    assert found == {**many, "k1": vector(1)}


async def test_a_store_that_searches_itself_ranks_exactly_or_says_it_does_not(
    queue: Queue,
) -> None:
    """``chunks_nearest`` is None where the caller ranks in memory (memory, SQLite, a
    PostgreSQL without pgvector: these servers), or the current chunks nearest first."""
    chunks = chunks_of(queue)
    await chunks.chunks_put([chunk("f", 1, s) for s in range(20)] + [chunk("f", 2, 0)])
    await chunks.chunks_flip("vs_01", "f", 1)
    found = await chunks.chunks_nearest("vs_01", DIMS, vector(3), 5, None)
    if found is None:
        return
    assert [(f, s) for f, s, _ in found] == exact_top("vs_01", 5)  # pragma: no cover


def exact_top(store_id: str, k: int) -> list[tuple[str, int]]:  # pragma: no cover
    import numpy as np

    rows = np.stack([np.frombuffer(chunk("f", 1, s).vector, "<f4") for s in range(20)])
    q = np.frombuffer(vector(3), "<f4")
    scores = rows @ q / np.linalg.norm(rows, axis=1) / np.linalg.norm(q)
    return [("f", int(i)) for i in np.argsort(-scores)[:k]]
