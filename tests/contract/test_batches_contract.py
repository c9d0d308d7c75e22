"""The BatchStore role's contract on every backend that keeps batches (memory, SQLite,
PostgreSQL, and the PostgreSQL store of a Redis or NATS deployment): whole records back as
stored, tenant scoping, paging newest first, the compare-and-set of ``batch_update`` (of two
writers from one version exactly one wins), and the scan of active batches."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from genspool.batches import machine
from genspool.core.batch import Batch, BatchStatus
from genspool.core.queue import Queue
from genspool.core.roles import BatchFilter, BatchStore
from tests.helpers.backends import BACKENDS, kind_url, open_backend

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def store_of(queue: Queue) -> BatchStore:
    batches = queue.storage.batches
    assert batches is not None
    return batches


def batch(batch_id: str, tenant: str = "acme", **fields: object) -> Batch:
    base = Batch(
        id=batch_id, tenant=tenant, endpoint="/v1/chat/completions", input_file_id="file-1",
        completion_window="24h", created_at=1000.0, expires_at=87_400.0,
    )  # fmt: skip
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["redis", "nats", "redis+postgres", "nats+postgres"])
def test_a_queue_server_alone_keeps_no_batches(
    kind: str, namespaced_url: Callable[[str], str]
) -> None:
    storage = open_backend(kind_url(kind, namespaced_url))
    if "+" in kind:
        assert storage.batches is not None
        assert storage.batches is storage.store  # type: ignore[comparison-overlap]
    else:
        assert storage.batches is None


async def test_a_record_comes_back_whole_and_tenant_scoped(queue: Queue) -> None:
    store = store_of(queue)
    full = batch(
        "batch_01", metadata={"k": "v"}, output_expires_after=3600.0, scopes=("read", "submit"),
        errors=({"code": "invalid_json_line", "message": "line 2: x", "param": None, "line": 2},),
        usage={"input_tokens": 3, "total_tokens": 5}, pending_files=("file-9", None),
        status=BatchStatus.IN_PROGRESS, in_progress_at=1001.5, total=7, enqueued=5, written=2,
    )  # fmt: skip
    await store.batch_put(full)
    await store.batch_put(batch("batch_02", "beta"))
    assert await store.batch_get("batch_01", "acme") == full
    assert await store.batch_get("batch_01", None) == full  # an admin
    assert await store.batch_get("batch_01", "beta") is None
    assert await store.batch_get("batch_99", None) is None


async def test_lists_page_newest_first_within_a_tenant(queue: Queue) -> None:
    store = store_of(queue)
    for i in range(5):
        await store.batch_put(batch(f"batch_{i:02d}", "acme" if i != 2 else "beta"))
    page = await store.batch_list(BatchFilter("acme", limit=2))
    assert [b.id for b in page] == ["batch_04", "batch_03"]
    rest = await store.batch_list(BatchFilter("acme", after="batch_03", limit=10))
    assert [b.id for b in rest] == ["batch_01", "batch_00"]
    everyone = await store.batch_list(BatchFilter(None, limit=10))
    assert [b.id for b in everyone] == [f"batch_{i:02d}" for i in range(4, -1, -1)]


async def test_an_update_is_written_only_over_the_version_it_was_decided_from(
    queue: Queue,
) -> None:
    store = store_of(queue)
    first = batch("batch_01")
    await store.batch_put(first)
    claimed = machine.claim(first, "runner-a", 2000.0, 30.0)
    assert claimed is not None and claimed.version == 1
    assert await store.batch_update(claimed, 0)
    stale = machine.claim(first, "runner-b", 2000.0, 30.0)
    assert stale is not None and not await store.batch_update(stale, 0)
    assert await store.batch_get("batch_01", None) == claimed
    assert not await store.batch_update(batch("batch_missing", version=1), 0)


async def test_of_two_writers_from_one_version_one_wins(queue: Queue) -> None:
    store = store_of(queue)
    await store.batch_put(batch("batch_01"))
    stored = await store.batch_get("batch_01", None)
    assert stored is not None
    cancelled = machine.cancel(stored, 2000.0)
    advanced = machine.claim(stored, "runner-a", 2000.0, 30.0)
    assert cancelled is not None and advanced is not None
    wins = await asyncio.gather(
        store.batch_update(cancelled, stored.version), store.batch_update(advanced, stored.version)
    )
    assert sorted(wins) == [False, True]
    now = await store.batch_get("batch_01", None)
    assert now == (cancelled if wins[0] else advanced)


async def test_the_active_scan_leaves_out_ended_batches(queue: Queue) -> None:
    store = store_of(queue)
    statuses = [BatchStatus.VALIDATING, BatchStatus.COMPLETED, BatchStatus.IN_PROGRESS,
                BatchStatus.CANCELLED, BatchStatus.CANCELLING]  # fmt: skip
    for i, status in enumerate(statuses):
        await store.batch_put(batch(f"batch_{i:02d}", status=status))
    active = await store.batches_active(10)
    assert [b.id for b in active] == ["batch_00", "batch_02", "batch_04"]
    assert [b.id for b in await store.batches_active(2)] == ["batch_00", "batch_02"]
    ending = await store.batch_get("batch_02", None)
    assert ending is not None
    done = machine.finished(ending, "file-o", None, 3000.0)
    assert done is not None and await store.batch_update(done, ending.version)
    assert [b.id for b in await store.batches_active(10)] == ["batch_00", "batch_04"]
