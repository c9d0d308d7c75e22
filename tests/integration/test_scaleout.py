"""Many processes on one backend URL: two ``genspool api`` and two ``genspool worker`` processes.

Run on every backend (a SQLite file shared by the processes, PostgreSQL, Redis, NATS), with an
echo model (named as such: it computes nothing; ``latency_ms`` makes a batch take a known
time). Checks that a WebSocket subscriber on one API process sees the events of a job submitted
through the other and run by a worker; that a worker killed with SIGKILL midway loses nothing
and no job gets two final results; that ``max_concurrency`` holds across worker processes; and
that a wrong URL is one clear line.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers.processes import Spawner, Target, fresh_target, ws_until_terminal

CHAT = "/v1/chat/completions"
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
MODELS = [
    {
        "name": "echo",
        "provider": "echo",
        "batching": {"max_batch_size": 4, "max_wait_ms": 5, "max_concurrency": 2},
        "options": {"latency_ms": 40},
    },
    {"name": "streamed", "provider": "echo", "options": {"latency_ms": 300}},
    # One batch of one at a time, across all workers: runs of its jobs never overlap.
    {
        "name": "solo",
        "provider": "echo",
        "batching": {"max_batch_size": 1, "max_concurrency": 1},
        "options": {"latency_ms": 150},
    },
]


@pytest.fixture(params=["sqlite", "postgres", "redis", "nats", "redis+postgres"])
def target(
    request: pytest.FixtureRequest, namespaced_url: Callable[[str], str], spawner: Spawner
) -> Iterator[Target]:
    yield from fresh_target(request.param, namespaced_url, spawner)


def submit(client: httpx.Client, model: str, text: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    r = client.post("/v1/jobs", json={"url": CHAT, "body": body})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def test_two_apis_two_workers_one_killed(spawner: Spawner, target: Target) -> None:
    config = spawner.models(MODELS)
    api1 = spawner.server(config, command="api", db_url=target.url, env=target.env)
    api2 = spawner.server(config, command="api", db_url=target.url, env=target.env)
    workers = [spawner.worker(target.url, config, env=target.env) for _ in range(2)]

    # A subscriber on api1 sees a job submitted through api2 and run by a worker, and (where
    # the backend carries events) the tokens it streams: "streamed" takes 300 ms to start.
    with connect(api1.ws_url, open_timeout=5, close_timeout=2) as ws:
        job = submit(api2.client, "streamed", "across three processes")
        ws.send(json.dumps({"subscribe": [job]}))
        events = _and_a_second_more(ws, ws_until_terminal(ws, {job}, timeout=20))
    statuses = [e["status"] for e in events if "delta" not in e]
    text = "across three processes"
    assert statuses[-1] == "succeeded", statuses
    assert events[-1]["result"]["body"]["choices"][0]["message"]["content"] == text
    if not target.url.startswith("sqlite"):  # SQLite carries no events: subscribers poll it
        assert statuses == ["queued", "running", "succeeded"], statuses
        assert "".join(e["delta"] for e in events if "delta" in e) == text, events

    # 160 jobs through both APIs; one worker is killed with SIGKILL while it holds batches.
    clients = [api1.client, api2.client]
    with connect(api1.ws_url, open_timeout=5, close_timeout=2) as ws:
        ids = [submit(clients[i % 2], "echo", f"job {i}") for i in range(160)]
        ws.send(json.dumps({"subscribe": ids}))
        spawner.wait_until(
            lambda: _count(api1, "succeeded") >= 30, timeout=30, what="the first results"
        )
        workers[0].kill()
        assert workers[0].popen.returncode == -signal.SIGKILL
        events = _and_a_second_more(ws, ws_until_terminal(ws, set(ids), timeout=60))
    finals = Counter(e["id"] for e in events if e["status"] in TERMINAL and "delta" not in e)
    assert set(finals) == set(ids) and set(finals.values()) == {1}, finals.most_common(3)
    jobs = [api2.get(i) for i in ids]
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert all(
        j["result"]["body"]["choices"][0]["message"]["content"] == f"job {n}"
        for n, j in enumerate(jobs)
    )
    assert max(j["attempts"] for j in jobs) <= 3


def test_max_concurrency_holds_across_worker_processes(spawner: Spawner, target: Target) -> None:
    config = spawner.models(MODELS)
    api = spawner.server(config, command="api", db_url=target.url, env=target.env)
    for _ in range(2):
        spawner.worker(target.url, config, env=target.env)
    ids = [submit(api.client, "solo", f"one at a time {i}") for i in range(8)]
    jobs = api.wait_all(ids, timeout=40)
    assert {j["status"] for j in jobs} == {"succeeded"}
    runs = sorted((j["timestamps"]["running"], j["timestamps"]["succeeded"]) for j in jobs)
    overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1] - 0.01]
    assert not overlaps, overlaps


@pytest.mark.parametrize(
    "bad_url",
    [
        "postgresql://postgres@127.0.0.1:1/test",
        "redis://127.0.0.1:1/0",
        "nats://127.0.0.1:1",
        "mysql://localhost/x",
    ],
)
def test_a_server_that_is_down_is_one_line(spawner: Spawner, bad_url: str) -> None:
    for command in (["worker"], ["api", "--port", str(spawner.free_port())]):
        started = time.monotonic()
        done = spawner.run(*command, "--db", bad_url, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr and lines[0].startswith("error:"), lines
        assert time.monotonic() - started < 20


def _count(server: Any, status: str) -> int:
    r = server.client.get("/v1/jobs", params={"status": status, "limit": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["data"])


def _and_a_second_more(ws: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` plus whatever arrives in the next second: a second terminal event of a job
    would arrive within the lease time."""
    end = time.monotonic() + 1.0
    while (left := end - time.monotonic()) > 0:
        try:
            events.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return events
