"""Schedules, watched directories and events start pipeline runs once each, on a fake clock
(named as such: exact timing is what is tested) over the real in-memory store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from genspool.backends import open_storage
from genspool.core.roles import PipelineStore, RunFilter
from genspool.exceptions import ConfigError
from genspool.pipelines.spec import Pipeline, load_pipelines
from genspool.pipelines.triggers import FileWatch, Scheduler, Triggers, schedule_clock

MINUTE = 60.0
T0 = 1_800_000_000.0  # a round minute (2027-01-15 08:00 UTC)


class FakeClock:
    """A clock the test moves (a fake: the schedules' timing is what is under test)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store() -> PipelineStore:
    store = open_storage(f"memory://triggers-{uuid.uuid4().hex}").pipelines
    assert store is not None
    return store


def _pipeline(tmp: Path, on: dict[str, Any], **extra: Any) -> dict[str, Pipeline]:
    doc = {
        "name": "weekly", "on": on, "source": {"items": [1]},
        "steps": [{"id": "s", "model": "echo", "prompt": "x"}], **extra,
    }  # fmt: skip
    return load_pipelines([doc], "test", tmp)


async def _runs(store: PipelineStore) -> list[Any]:
    return await store.run_list(RunFilter(limit=1000))


assert T0 % MINUTE == 0


async def test_two_processes_fire_each_tick_once(tmp_path: Path) -> None:
    store, clock = _store(), FakeClock(T0 + 1)
    pipes = _pipeline(tmp_path, {"schedule": {"cron": "* * * * *"}})
    a, b = Scheduler(store, pipes, clock), Scheduler(store, pipes, clock)
    await a.check()
    await b.check()
    for _ in range(10):
        clock.now += MINUTE
        await asyncio.gather(a.check(), b.check())
    runs = await _runs(store)
    assert len(runs) == 10
    assert len({r.key for r in runs}) == 10
    ticks = await store.ticks_list("weekly", None, 100)
    assert [t.outcome for t in ticks] == ["fired"] * 10
    assert sorted(t.at for t in ticks) == [T0 + MINUTE * i for i in range(1, 11)]
    assert {t.run_id for t in ticks} == {r.id for r in runs}


@pytest.mark.parametrize(
    ("policy", "fired", "other"),
    [("all", 6, None), ("latest", 1, "skipped"), ("none", 0, "missed")],
)
async def test_ticks_passed_while_down_follow_the_catch_up_policy(
    tmp_path: Path, policy: str, fired: int, other: str | None
) -> None:
    store, clock = _store(), FakeClock(T0 + 1)
    pipes = _pipeline(tmp_path, {"schedule": {"cron": "*/10 * * * *", "catch_up": policy}})
    up = Scheduler(store, pipes, clock)
    await up.check()  # first look: nothing due yet
    clock.now = T0 + 600 + 1
    await up.check()  # the tick of T0+600 fires
    clock.now = T0 + 600 + 3600 + 5 * MINUTE  # then down for an hour: 6 ticks passed, all late
    await Scheduler(store, pipes, clock).check()  # a process started afresh
    ticks = (await store.ticks_list("weekly", None, 100))[:-1]  # not the one before the gap
    assert len(ticks) == 6
    assert sum(t.outcome == "fired" for t in ticks) == fired
    assert all(t.outcome in ("fired", other) for t in ticks)
    if policy == "latest":
        assert ticks[0].outcome == "fired" and ticks[0].at == T0 + 4200
    assert len(await _runs(store)) == fired + 1


async def test_a_schedule_in_a_time_zone_fires_at_its_local_time(tmp_path: Path) -> None:
    store, clock = _store(), FakeClock(T0)
    cron = {"cron": "0 9 * * *", "timezone": "Europe/Paris"}  # 08:00 UTC in January
    pipes = _pipeline(tmp_path, {"schedule": cron})
    s = Scheduler(store, pipes, clock)
    clock.now = T0 - 1
    await s.check()
    clock.now = T0 + 1
    await s.check()
    ticks = await store.ticks_list("weekly", None, 10)
    assert [(t.at, t.outcome) for t in ticks] == [(T0, "fired")]


def test_the_fake_clock_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSPOOL_FAKE_SCHEDULE_CLOCK", f"100:{T0}:60")
    clock = schedule_clock(lambda: 110.0)
    assert clock() == T0 + 600
    monkeypatch.setenv("GENSPOOL_FAKE_SCHEDULE_CLOCK", "soon")
    with pytest.raises(ValueError, match="REAL0:FAKE0:SPEED"):
        schedule_clock(lambda: 0.0)


async def test_a_file_starts_one_run_once_it_has_settled(tmp_path: Path) -> None:
    store, clock = _store(), FakeClock(T0)
    files = {"path": "inbox", "glob": "*.jsonl", "settle_s": 2}
    pipes = _pipeline(
        tmp_path, {"files": files}, inputs={"file": {"required": True}},
        source={"jsonl": "{{inputs.file}}"},
    )  # fmt: skip
    watch, other = (FileWatch(store, pipes["weekly"], clock) for _ in range(2))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = inbox / "a.jsonl"
    for n in range(5):  # written slowly: it grows every second
        with target.open("a") as f:
            f.write(f'{{"n": {n}}}\n')
        clock.now += 1
        assert await watch.scan() == []
    (inbox / "ignored.txt").write_text("x")
    clock.now += 1
    assert await watch.scan() == []  # unchanged for 1 s: not settled yet
    assert await other.scan() == []  # another process sees it for the first time
    clock.now += 1.5
    started = await watch.scan()
    assert len(started) == 1 and started[0].inputs == {"file": str(target)}
    clock.now += 3
    assert [r.id for r in await other.scan()] == [started[0].id]  # the same run, not another
    assert await watch.scan() == []
    assert len(await _runs(store)) == 1
    with target.open("a") as f:  # written again later: a new file, a new run
        f.write('{"n": 9}\n')
    clock.now += 1
    await watch.scan()
    clock.now += 3
    assert len(await watch.scan()) == 1
    assert len(await _runs(store)) == 2


async def test_an_event_starts_a_run_of_its_tenants_pipelines_once(tmp_path: Path) -> None:
    store, clock = _store(), FakeClock(T0)
    pipes = _pipeline(
        tmp_path, {"events": {"pattern": {"type": ["batch.completed"]}}}, tenant="acme"
    )
    a, b = Triggers(store, pipes, clock), Triggers(store, pipes, clock)
    event = {"type": "batch.completed", "id": "evt_1", "tenant": "acme", "detail": {}}
    first, again = await a.event(event), await b.event(event)
    assert len(first) == 1 and [r.id for r in again] == [first[0].id]
    assert await a.event({**event, "type": "batch.failed", "id": "evt_2"}) == []
    assert await a.event({**event, "id": "evt_3", "tenant": "beta"}) == []
    assert len(await _runs(store)) == 1


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"on": {"schedule": {"cron": "every monday"}}}, "not a cron expression"),
        ({"on": {"schedule": {"cron": "* * * * *", "timezone": "Mars/Olympus"}}}, "time zone"),
        ({"on": {"events": {"pattern": {"type": [{"prefix": 3}]}}}}, "type[0].prefix"),
        ({"steps": [{"id": "a", "needs": ["b"], "model": "echo", "prompt": "x"}]}, "no step 'b'"),
        (
            {"steps": [{"id": "a", "needs": ["b"], "model": "echo", "prompt": "x"},
                       {"id": "b", "needs": ["a"], "model": "echo", "prompt": "x"}]},
            "a cycle of needs",
        ),
        ({"steps": [{"id": "a", "model": "echo", "prompt": "{{steps.b}}"},
                    {"id": "b", "model": "echo", "prompt": "x"}]}, "does not need"),
        ({"steps": [{"id": "a", "model": "echo", "prompt": "{{inputz.x}}"}]}, "names nothing"),
        ({"steps": [{"id": "a", "transform": "no_such_module:f"}]}, "cannot import"),
        ({"steps": [{"id": "a", "model": "echo", "filter": {}}]}, "exactly one of"),
        ({"source": {"jsonl": "x", "csv": "y"}}, "source"),
    ],
)  # fmt: skip
def test_a_bad_pipeline_is_refused_at_load_naming_what_is_wrong(
    tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    doc = {
        "name": "p", "source": {"items": [1]},
        "steps": [{"id": "s", "model": "echo", "prompt": "x"}], **change,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="pipelines") as err:
        load_pipelines([doc], "models file m.yaml", tmp_path)
    assert words in str(err.value)


def test_a_pipeline_file_beside_the_models_file_loads_with_on_as_yaml_writes_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.yaml").write_text(
        "on:\n  schedule:\n    cron: '0 8 * * MON'\n"
        "source: {items: [1, 2]}\n"
        "steps:\n  - id: a\n    model: echo\n    prompt: hi\n"
    )
    pipes = load_pipelines([{"name": "p", "file": "p.yaml"}], "models file m.yaml", tmp_path)
    assert pipes["p"].on.schedule[0].cron == "0 8 * * MON"
    assert pipes["p"].base == tmp_path
