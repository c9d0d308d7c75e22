"""Pipelines across real processes, where the process boundary is the point.

* A schedule fires each tick exactly once across two ``genspool api`` and two ``genspool
  worker`` processes on PostgreSQL (a fake schedule clock, the same in every process, makes a
  minute of the cron pass in half a real second), also while one API process is killed with
  SIGKILL: the other goes on firing, no tick lost, none run twice.
* A ``genspool serve`` killed with SIGKILL halfway through a run, and started again on the same
  SQLite file, resumes the run once its lease runs out; the model (a remote one on the fault
  server, which counts what it is asked) answered each item once.
* A large file written slowly into a watched directory starts one run, after it settles, that
  reads every line (with file-system events, and polling).
* A webhook receiver that is down and then up gets every ``pipeline_run.completed`` event,
  signed; a batch's ``batch.completed`` reaches it too, and starts an ``on: events`` pipeline
  once.

Echo models (named as such: they compute nothing) run the model steps, except in the resume
test, whose model is the fault server's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from genspool.testing.faults import FaultServer
from genspool.webhooks import verify
from tests.helpers.processes import Server, Spawner, Target, fresh_target
from tests.helpers.receiver import Delivery, Receiver
from tests.integration.test_files_api import create_key

ECHO = {"name": "echo", "provider": "echo", "batching": {"max_batch_size": 8, "max_wait_ms": 5}}
ENDED = ("completed", "failed", "cancelled")


def config(spawner: Spawner, models: list[dict[str, Any]], pipelines: list[Any]) -> Path:
    """A models file with ``pipelines:`` beside the models."""
    path = spawner.root / f"models-{len(list(spawner.root.glob('models-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"models": models, "pipelines": pipelines}, sort_keys=False))
    return path


def get(server: Server, path: str, **params: Any) -> dict[str, Any]:
    r = server.client.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def all_runs(server: Server, name: str) -> list[dict[str, Any]]:
    """Every run of the pipeline, newest first, through the paging of the API."""
    runs: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"after": after} if after else {})
        page = get(server, f"/v1/pipelines/{name}/runs", **params)
        runs += page["data"]
        if not page["has_more"]:
            return runs
        after = page["last_id"]


def ticks(server: Server, name: str) -> list[dict[str, Any]]:
    return list(get(server, f"/v1/pipelines/{name}/ticks", limit=1000)["data"])


def run_of(server: Server, name: str, run_id: str) -> dict[str, Any]:
    return get(server, f"/v1/pipelines/{name}/runs/{run_id}")


def ended(server: Server, name: str, run_id: str, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = run_of(server, name, run_id)
        return run if run["status"] in ENDED else None

    found = Spawner.wait_until(done, timeout=timeout, interval=0.2, what=f"run {run_id} to end")
    assert found is not None
    return found


# -- 1. a schedule across processes ------------------------------------------------------------

#: Fake seconds per real second: the every-minute cron ticks twice a real second.
SPEED = 120.0


@pytest.fixture
def postgres(namespaced_url: Callable[[str], str], spawner: Spawner) -> Iterator[Target]:
    yield from fresh_target("postgres", namespaced_url, spawner)


def test_each_tick_fires_once_across_two_apis_one_killed(
    spawner: Spawner, postgres: Target
) -> None:
    real0 = time.time()
    fake0 = math.floor(real0 / 60) * 60  # a round minute
    env = postgres.env | {"GENSPOOL_FAKE_SCHEDULE_CLOCK": f"{real0}:{fake0}:{SPEED}"}
    pipeline = {
        "name": "minutely", "on": {"http": False, "schedule": {"cron": "* * * * *"}},
        "source": {"items": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]},
        "key": "{{run.id}}:{{item.id}}",  # each run's items its own: none skipped
        "steps": [{"id": "echo", "model": "echo", "prompt": "{{item.text}} {{run.id}}"}],
        "sink": {"jsonl": {}},
    }  # fmt: skip
    path = config(spawner, [ECHO], [pipeline])
    apis = [spawner.server(path, command="api", db_url=postgres.url, env=env) for _ in range(2)]
    for _ in range(2):
        spawner.worker(postgres.url, path, env=env)
    survivor = apis[1]

    def fired(n: int) -> Callable[[], bool]:
        return lambda: len(ticks(survivor, "minutely")) >= n

    spawner.wait_until(fired(20), timeout=40, interval=0.2, what="20 ticks")
    apis[0].proc.kill()
    assert apis[0].proc.popen.returncode == -signal.SIGKILL
    spawner.wait_until(fired(45), timeout=40, interval=0.2, what="45 ticks")

    before = ticks(survivor, "minutely")
    runs = all_runs(survivor, "minutely")
    after = ticks(survivor, "minutely")  # the ticks fire on meanwhile

    # Every tick between the first and the last: recorded once, fired, one run each.
    ats = sorted(t["at"] for t in after)
    assert [b - a for a, b in itertools.pairwise(ats)] == [60.0] * (len(ats) - 1), ats
    assert {t["outcome"] for t in after} == {"fired"}, Counter(t["outcome"] for t in after)
    tick_runs = [t["run_id"] for t in after]
    assert len(set(tick_runs)) == len(tick_runs), Counter(tick_runs).most_common(3)
    # No run without its tick (a duplicate would have none), none of another trigger.
    assert {r["id"] for r in runs} <= set(tick_runs)
    assert {t["run_id"] for t in before} <= {r["id"] for r in runs}
    assert {r["trigger"] for r in runs} == {"schedule"}

    # Every run completes, those the killed process was driving once their lease runs out.
    deadline = time.monotonic() + 75
    for run in runs:
        done = ended(survivor, "minutely", run["id"], max(1.0, deadline - time.monotonic()))
        assert done["status"] == "completed", done
        assert done["counts"]["succeeded"] == 2, done


# -- 2. a run resumed after a crash ------------------------------------------------------------

ITEMS = 60


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    """The model: every call answered after 250 ms (8 at a time: 60 items take ~2 s)."""
    server = FaultServer(latency_s=0.25)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_run_killed_midway_resumes_calling_the_model_once_per_item(
    spawner: Spawner, faults: FaultServer
) -> None:
    remote = {"name": "remote", "provider": "openai",
              "options": {"base_url": f"{faults.url}/v1"},
              "batching": {"max_batch_size": 1, "max_concurrency": 8}}  # fmt: skip
    pipeline = {
        "name": "resumable", "concurrency": 8,
        "source": {"items": [{"id": f"i{n}", "text": f"item {n}"} for n in range(ITEMS)]},
        "key": "{{item.id}}",
        "steps": [{"id": "ask", "model": "remote", "prompt": "{{item.text}}"}],
        "sink": {"jsonl": {}},
    }  # fmt: skip
    path, db = config(spawner, [remote], [pipeline]), spawner.root / "resume.db"
    env = {"GENSPOOL_LEASE_S": "2"}  # a killed worker's jobs come back within seconds
    first = spawner.server(path, db=db, env=env)
    r = first.client.post("/v1/pipelines/resumable/runs", json={})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    spawner.wait_until(
        lambda: run_of(first, "resumable", run_id)["counts"]["succeeded"] >= 15,
        timeout=30, interval=0.05, what="15 items done",
    )  # fmt: skip
    first.proc.kill()
    killed_at = time.time()
    seen = sum(v["count"] for v in faults.stats()["requests"].values())
    assert seen < ITEMS, f"the run had made all its calls ({seen}) before the kill"

    # Started again on the same file: the run waits out its 30 s lease, then resumes.
    second = spawner.server(path, db=db, env=env)
    run = ended(second, "resumable", run_id, timeout=75)
    assert run["status"] == "completed", run
    assert run["counts"] | {"pending": 0} == {
        "total": ITEMS, "read": ITEMS, "succeeded": ITEMS, "failed": 0, "skipped": 0,
        "pending": 0,
    }, run  # fmt: skip
    assert run["started_at"] <= killed_at

    # The model answered each item once. A call in flight at the kill was cut off (the fault
    # server saw its client leave) and made again by the job's retry: answered once still.
    requests = faults.stats()["requests"]
    assert sorted(requests) == sorted(f"item {n}" for n in range(ITEMS))
    answered = {k: v["count"] - len(v["aborted"]) for k, v in requests.items()}
    assert set(answered.values()) == {1}, {k: v for k, v in requests.items() if v["count"] > 1}
    cut = {k: v for k, v in requests.items() if v["aborted"]}
    assert all(abs(v["aborted"][0] - killed_at) < 2 for v in cut.values()), cut

    content = second.client.get(f"/v1/files/{run['output_file_ids'][0]}/content")
    assert content.status_code == 200, content.text
    keys = [json.loads(line)["key"] for line in content.text.splitlines()]
    assert keys == [f"i{n}" for n in range(ITEMS)]


# -- 3. a watched directory ----------------------------------------------------------------------

SETTLE_S = 2.0
LINES, PAD = 2_000, 10_000  # ~20 MB


@pytest.mark.parametrize("poll", [False, True], ids=["events", "poll"])
def test_a_large_file_written_slowly_starts_one_run_once_settled(
    spawner: Spawner, poll: bool
) -> None:
    pipeline = {
        "name": "inbox",
        "on": {"http": False, "files": {"path": "inbox", "glob": "*.jsonl", "input": "file",
                                        "settle_s": SETTLE_S, "poll": poll, "interval_s": 0.5}},
        "inputs": {"file": {"required": True}},
        "source": {"jsonl": "{{inputs.file}}"}, "key": "{{item.n}}", "concurrency": 256,
        "steps": [{"id": "counted", "filter": {"item": {"n": [{"numeric": [">=", 0]}]}}}],
    }  # fmt: skip
    server = spawner.server(config(spawner, [ECHO], [pipeline]), db=spawner.root / "files.db")
    inbox = spawner.root / "inbox"
    spawner.wait_until(inbox.exists, what="the watched directory")
    data = b"".join(json.dumps({"n": n, "pad": "x" * PAD}).encode() + b"\n" for n in range(LINES))
    chunks = 25  # cut anywhere, mid-line too: a half-written file would not parse
    with (inbox / "big.jsonl").open("wb") as f:
        for i in range(chunks):
            f.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
            f.flush()
            os.fsync(f.fileno())
            last_write = time.time()
            time.sleep(0.2)
    assert len(data) > 20_000_000

    def runs() -> list[dict[str, Any]]:
        return list(get(server, "/v1/pipelines/inbox/runs", limit=10)["data"])

    first = spawner.wait_until(runs, timeout=20, interval=0.1, what="a run")
    run = ended(server, "inbox", first[0]["id"], timeout=60)
    assert run["status"] == "completed", (run["error"], run["counts"])
    assert run["trigger"] == "files" and run["inputs"] == {"file": str(inbox / "big.jsonl")}
    assert run["counts"]["total"] == run["counts"]["succeeded"] == LINES, run["counts"]
    created = _created_at(spawner.root / "files.db", run["id"])
    assert created >= last_write + SETTLE_S, (created, last_write)
    time.sleep(SETTLE_S + 1)  # a second look at the settled file starts nothing
    assert [r["id"] for r in runs()] == [run["id"]]


def _created_at(db: Path, run_id: str) -> float:
    """A run's ``created_at`` to the microsecond (the API gives whole seconds)."""
    (doc,) = Spawner.read_db(db, "SELECT doc FROM runs WHERE id = ?", [run_id])[0]
    created: float = json.loads(doc)["created_at"]
    return created


# -- 4. webhooks of runs, and a run started by a batch's event -------------------------------


class ThreadedReceiver:
    """:class:`Receiver` (a real TCP server) on an event loop of its own thread, so that a
    test that is not a coroutine can take it down and up."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def got(self) -> list[Delivery]:
        return list(self.receiver.got)

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    r = ThreadedReceiver()  # not started: its port refuses connections
    try:
        yield r
    finally:
        r.close()


def events_of(got: list[Delivery], secret: str) -> list[dict[str, Any]]:
    """The deliveries' events, each signature checked."""
    out = []
    for delivery in got:
        verify(secret, delivery.headers, delivery.body)
        out.append(json.loads(delivery.body))
    return out


def test_webhooks_of_runs_and_a_run_started_by_a_batch(
    spawner: Spawner, receiver: ThreadedReceiver
) -> None:
    db = spawner.root / "hooks.db"
    key = create_key(spawner, db, "acme", "submit,read")
    echo_step = [{"id": "echo", "model": "echo", "prompt": "{{item.text}}"}]
    digest = {"name": "digest", "tenant": "acme", "key": "{{run.id}}:{{item.id}}",
              "source": {"items": [{"id": n, "text": f"t{n}"} for n in range(3)]},
              "steps": echo_step}  # fmt: skip
    after = {"name": "after-batch", "tenant": "acme", "steps": echo_step,
             "on": {"http": False, "events": {"pattern": {"type": ["batch.completed"]}}},
             "source": {"items": [{"id": 1, "text": "batch done"}]}}  # fmt: skip
    env = {"GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.5"}
    server = spawner.server(config(spawner, [ECHO], [digest, after]), db=db, env=env)
    server.client.headers["Authorization"] = f"Bearer {key}"

    made = server.client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": ["pipeline_run.*", "batch.*"]}
    )
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]

    # Three runs end while the receiver is down; once it is up, each event arrives, signed.
    ids = []
    for _ in range(3):
        r = server.client.post("/v1/pipelines/digest/runs", json={})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    for run_id in ids:
        assert ended(server, "digest", run_id, timeout=30)["status"] == "completed"
    time.sleep(1.0)  # deliveries fail against the closed port meanwhile
    assert receiver.got == []
    receiver.start()
    spawner.wait_until(lambda: len(receiver.got) >= 3, timeout=30, what="3 deliveries")
    time.sleep(0.5)  # no repeat follows
    runs = events_of(receiver.got, secret)
    assert sorted(e["data"]["id"] for e in runs) == sorted(ids)
    assert {e["type"] for e in runs} == {"pipeline_run.completed"}
    assert {e["data"]["counts"]["succeeded"] for e in runs} == {3}

    # A batch end to end: its batch.completed arrives, and starts the after-batch run once.
    lines = "".join(
        json.dumps({"custom_id": f"c{n}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "echo", "messages": [{"role": "user", "content": f"b{n}"}]}})
        + "\n"
        for n in range(5)
    )  # fmt: skip
    up = server.client.post(
        "/v1/files", files={"file": ("in.jsonl", lines.encode())}, data={"purpose": "batch"}
    )
    assert up.status_code == 200, up.text
    batch = server.client.post("/v1/batches", json={
        "input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    })  # fmt: skip
    assert batch.status_code == 200, batch.text
    batch_id = batch.json()["id"]

    def started() -> list[dict[str, Any]]:
        return list(get(server, "/v1/pipelines/after-batch/runs")["data"])

    (run,) = spawner.wait_until(started, timeout=30, what="the run the batch started")
    assert run["trigger"] == "events", run
    assert ended(server, "after-batch", run["id"], timeout=30)["status"] == "completed"
    spawner.wait_until(lambda: len(receiver.got) >= 5, timeout=30, what="2 more deliveries")
    time.sleep(1.0)  # no second run, no repeated event
    assert [r["id"] for r in started()] == [run["id"]]
    later = events_of(receiver.got, secret)[3:]
    assert sorted((e["type"], e["data"]["id"]) for e in later) == sorted(
        [("batch.completed", batch_id), ("pipeline_run.completed", run["id"])]
    )
