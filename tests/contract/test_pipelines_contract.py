"""The PipelineStore role's contract on every backend that keeps pipeline runs (memory, SQLite,
PostgreSQL, and the PostgreSQL store of a Redis or NATS deployment): whole records back as
stored, tenant scoping, one run per key (also when two writers race), paging newest first, the
compare-and-set of ``run_update``, the scan of active runs, items in source order, which keys a
pipeline finished, and ticks recorded once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem, RunStatus, Tick
from genspool.core.queue import Queue
from genspool.core.roles import PipelineStore, RunFilter
from tests.helpers.backends import BACKENDS, kind_url, open_backend

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def store_of(queue: Queue) -> PipelineStore:
    pipelines = queue.storage.pipelines
    assert pipelines is not None
    return pipelines


def run(run_id: str, tenant: str = "acme", pipeline: str = "etl", **fields: object) -> PipelineRun:
    base = PipelineRun(id=run_id, tenant=tenant, pipeline=pipeline, created_at=1000.0)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def item(run_id: str, key: str, seq: int, status: ItemStatus = ItemStatus.PENDING) -> RunItem:
    return RunItem(run_id, key, seq, status, data={"line": seq})


def tick(at: float, outcome: str = "fired", run_id: str | None = "run_01") -> Tick:
    return Tick("etl", at, outcome, recorded_at=at + 0.5, run_id=run_id)


@pytest.mark.parametrize("kind", ["redis", "nats", "redis+postgres", "nats+postgres"])
def test_a_queue_server_alone_keeps_no_pipelines(
    kind: str, namespaced_url: Callable[[str], str]
) -> None:
    storage = open_backend(kind_url(kind, namespaced_url))
    if "+" in kind:
        assert storage.pipelines is not None
        assert storage.pipelines is storage.store  # type: ignore[comparison-overlap]
    else:
        assert storage.pipelines is None


async def test_a_record_comes_back_whole_and_tenant_scoped(queue: Queue) -> None:
    store = store_of(queue)
    full = run(
        "run_01", trigger="schedule", key="cron:etl:1000", inputs={"path": "in.jsonl", "n": [1]},
        status=RunStatus.RUNNING, metadata={"k": "v"}, scopes=("read", "submit"),
        started_at=1001.5, read=7, total=9, succeeded=3, failed=1, skipped=2,
        usage={"total_tokens": 5}, output_file_ids=("file-1", "file-2"), error_file_id="file-e",
        error={"code": "x", "message": "y"}, version=3, owner="runner-a", lease_until=1030.0,
        stop="cancel", source_done=True,
    )  # fmt: skip
    assert await store.run_put(full) == full
    await store.run_put(run("run_02", "beta"))
    assert await store.run_get("run_01", "acme") == full
    assert await store.run_get("run_01", None) == full  # an admin
    assert await store.run_get("run_01", "beta") is None
    assert await store.run_get("run_99", None) is None


async def test_a_key_starts_one_run(queue: Queue) -> None:
    store = store_of(queue)
    first = run("run_01", key="k1")
    assert await store.run_put(first) == first
    assert await store.run_put(run("run_02", key="k1", trigger="files")) == first
    other_tenant, other_pipeline = run("run_03", "beta", key="k1"), run("run_04", "x", key="k1")
    assert await store.run_put(other_tenant) == other_tenant
    assert await store.run_put(other_pipeline) == other_pipeline
    unkeyed = [run("run_05"), run("run_06")]
    assert [await store.run_put(r) for r in unkeyed] == unkeyed
    listed = await store.run_list(RunFilter(None, limit=10))
    assert [r.id for r in listed] == ["run_06", "run_05", "run_04", "run_03", "run_01"]


async def test_of_two_writers_of_one_key_both_get_the_first_run(queue: Queue) -> None:
    store = store_of(queue)
    a, b = run("run_01", key="cron:etl:60"), run("run_02", key="cron:etl:60")
    got = await asyncio.gather(store.run_put(a), store.run_put(b))
    assert got[0] == got[1] and got[0] in (a, b)
    assert [r.id for r in await store.run_list(RunFilter(None))] == [got[0].id]


async def test_lists_page_newest_first_by_tenant_and_pipeline(queue: Queue) -> None:
    store = store_of(queue)
    for i in range(45):
        await store.run_put(run(f"run_{i:03d}", "beta" if i % 9 == 4 else "acme",
                                "load" if i % 5 == 0 else "etl"))  # fmt: skip
    acme = [f"run_{i:03d}" for i in range(44, -1, -1) if i % 9 != 4]
    seen: list[str] = []
    after = None
    while page := await store.run_list(RunFilter("acme", after=after, limit=10)):
        assert len(page) <= 10
        seen += [r.id for r in page]
        after = page[-1].id
    assert seen == acme
    load = await store.run_list(RunFilter("acme", pipeline="load", limit=100))
    assert [r.id for r in load] == [i for i in acme if int(i[4:]) % 5 == 0]
    beta = await store.run_list(RunFilter("beta", limit=100))
    assert [r.id for r in beta] == ["run_040", "run_031", "run_022", "run_013", "run_004"]
    everyone = await store.run_list(RunFilter(None, pipeline="load", after="run_020", limit=3))
    assert [r.id for r in everyone] == ["run_015", "run_010", "run_005"]


async def test_an_update_is_written_only_over_the_version_it_was_decided_from(
    queue: Queue,
) -> None:
    store = store_of(queue)
    first = run("run_01")
    await store.run_put(first)
    claimed = dataclasses.replace(first, status=RunStatus.RUNNING, owner="a", version=1)
    assert await store.run_update(claimed, 0)
    stale = dataclasses.replace(first, owner="b", version=1)
    assert not await store.run_update(stale, 0)
    assert await store.run_get("run_01", None) == claimed
    assert not await store.run_update(run("run_missing", version=1), 0)


async def test_of_two_writers_from_one_version_one_wins(queue: Queue) -> None:
    store = store_of(queue)
    await store.run_put(run("run_01"))
    stored = await store.run_get("run_01", None)
    assert stored is not None
    nxt = stored.version + 1
    cancelling = dataclasses.replace(stored, status=RunStatus.CANCELLING, version=nxt)
    running = dataclasses.replace(stored, status=RunStatus.RUNNING, owner="a", version=nxt)
    wins = await asyncio.gather(
        store.run_update(cancelling, stored.version), store.run_update(running, stored.version)
    )
    assert sorted(wins) == [False, True]
    assert await store.run_get("run_01", None) == (cancelling if wins[0] else running)


async def test_the_active_scan_is_oldest_first_and_leaves_out_ended_runs(queue: Queue) -> None:
    store = store_of(queue)
    statuses = [RunStatus.QUEUED, RunStatus.COMPLETED, RunStatus.RUNNING, RunStatus.FAILED,
                RunStatus.CANCELLING, RunStatus.CANCELLED, RunStatus.FINALIZING]  # fmt: skip
    for i, status in enumerate(statuses):
        await store.run_put(run(f"run_{i:02d}", status=status))
    active = await store.runs_active(10)
    assert [r.id for r in active] == ["run_00", "run_02", "run_04", "run_06"]
    assert [r.id for r in await store.runs_active(2)] == ["run_00", "run_02"]
    ending = dataclasses.replace(active[1], status=RunStatus.COMPLETED, version=1)
    assert await store.run_update(ending, 0)
    assert [r.id for r in await store.runs_active(10)] == ["run_00", "run_04", "run_06"]


async def test_items_are_inserted_replaced_and_listed_in_source_order(queue: Queue) -> None:
    store = store_of(queue)
    await store.run_put(run("run_01"))
    await store.run_put(run("run_02"))
    items = [item("run_01", f"k{seq}", seq) for seq in (3, 1, 2, 4, 5)]
    await store.items_put([*items, item("run_02", "k1", 1)])
    listed = await store.items_list("run_01", 0, 10)
    assert [(i.key, i.seq) for i in listed] == [(f"k{s}", s) for s in range(1, 6)]
    assert listed[0] == item("run_01", "k1", 1)
    done = dataclasses.replace(
        item("run_01", "k2", 2, ItemStatus.DONE), steps={"llm": {"text": "hi"}}
    )
    failed = dataclasses.replace(
        item("run_01", "k4", 4, ItemStatus.FAILED), error={"step": "llm", "code": "x"}
    )
    await store.items_put([done, failed])
    assert await store.items_list("run_01", 1, 2) == [done, item("run_01", "k3", 3)]
    assert await store.items_list("run_01", 0, 10, ItemStatus.DONE) == [done]
    pending = await store.items_list("run_01", 1, 10, ItemStatus.PENDING)
    assert [i.key for i in pending] == ["k3", "k5"]
    assert await store.items_list("run_01", 5, 10) == []
    assert await store.items_list("run_02", 0, 10) == [item("run_02", "k1", 1)]


async def test_a_thousand_items_go_in_one_call(queue: Queue) -> None:
    store = store_of(queue)
    await store.run_put(run("run_01"))
    await store.items_put([item("run_01", f"k{i:04d}", i) for i in range(1, 1001)])
    page = await store.items_list("run_01", 990, 100)
    assert [i.seq for i in page] == list(range(991, 1001))
    keys = [f"k{i:04d}" for i in range(1, 1001)]
    assert await store.items_finished("acme", "etl", keys) == {}


async def test_finished_keys_are_those_done_or_skipped_in_any_run_of_the_pipeline(
    queue: Queue,
) -> None:
    store = store_of(queue)
    for r in (run("run_01"), run("run_02"), run("run_03", "beta"), run("run_04", pipeline="x")):
        await store.run_put(r)
    await store.items_put([
        item("run_01", "a", 1, ItemStatus.DONE), item("run_01", "b", 2, ItemStatus.FAILED),
        item("run_01", "c", 3), item("run_02", "b", 1, ItemStatus.SKIPPED),
        item("run_02", "d", 2, ItemStatus.FAILED), item("run_03", "e", 1, ItemStatus.DONE),
        item("run_04", "f", 1, ItemStatus.DONE),
    ])  # fmt: skip
    keys = ["a", "b", "c", "d", "e", "f", "g"]
    finished = await store.items_finished("acme", "etl", keys)
    assert set(finished) == {"a", "b"}
    assert finished["a"] == item("run_01", "a", 1, ItemStatus.DONE)  # the item, whole
    assert finished["b"] == item("run_02", "b", 1, ItemStatus.SKIPPED)  # the latest run's
    assert set(await store.items_finished("beta", "etl", keys)) == {"e"}
    assert set(await store.items_finished("acme", "x", keys)) == {"f"}
    assert await store.items_finished("acme", "etl", []) == {}
    many = [f"n{i}" for i in range(1200)] + ["a"]  # more than one chunk of a driver's limit
    assert set(await store.items_finished("acme", "etl", many)) == {"a"}


async def test_a_tick_is_recorded_once(queue: Queue) -> None:
    store = store_of(queue)
    first = tick(60.0)
    assert await store.tick_record(first) == first
    assert await store.tick_record(tick(60.0, "skipped", None)) == first
    other = Tick("load", 60.0, "missed", 61.0)
    assert await store.tick_record(other) == other
    racing = [tick(120.0, "fired", "run_a"), tick(120.0, "fired", "run_b")]
    got = await asyncio.gather(*(store.tick_record(t) for t in racing))
    assert got[0] == got[1] and got[0] in racing


async def test_ticks_list_latest_first_before_an_instant(queue: Queue) -> None:
    store = store_of(queue)
    for i in range(1, 8):
        await store.tick_record(tick(60.0 * i, "missed" if i == 3 else "fired", f"run_{i}"))
    await store.tick_record(Tick("load", 90.0, "fired", 91.0))
    latest = await store.ticks_list("etl", None, 3)
    assert [t.at for t in latest] == [420.0, 360.0, 300.0]
    assert latest[0] == tick(420.0, "fired", "run_7")
    older = await store.ticks_list("etl", 300.0, 10)
    assert [(t.at, t.outcome) for t in older] == [
        (240.0, "fired"), (180.0, "missed"), (120.0, "fired"), (60.0, "fired")
    ]  # fmt: skip
    assert await store.ticks_list("load", None, 10) == [Tick("load", 90.0, "fired", 91.0)]
    assert await store.ticks_list("none", None, 10) == []
