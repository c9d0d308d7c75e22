"""Fan-out across processes (issue 9, "Must show"): two ``genspool api`` and two ``genspool
worker`` processes on PostgreSQL, on Redis, and on Redis for the queue with PostgreSQL for the
store; the branches' models are remote models on the fault server (:mod:`genspool.testing.faults`,
a real HTTP server on loopback in this process), each scripted to its own latency.

* A fan-out submitted through one API process is followed over SSE on the other, which sees one
  ``branch`` event per branch as it ends and then the final event; the branches were run by both
  workers (their attempts name the worker).
* A worker SIGKILLed while it runs the parent and some branches: the other worker takes the
  parent up once its lease runs out and the fan-out completes. The branches that had ended keep
  their results and are not called again; the calls the kill cut (the fault server sees their
  connections close) are made once more; no branch is answered twice, and the parent lists each
  branch once.

Leases are short (GENSPOOL_LEASE_S=2) so that a dead worker's jobs come back within seconds, as
in the other crash tests.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from genspool.testing.faults import FaultServer
from tests.helpers.processes import Proc, Server, Spawner, Target, fresh_target

FANOUT = "genspool-fanout"
BRANCHES = 6


@pytest.fixture(params=["postgres", "redis", "redis+postgres"])
def target(
    request: pytest.FixtureRequest, namespaced_url: Callable[[str], str], spawner: Spawner
) -> Iterator[Target]:
    yield from fresh_target(request.param, namespaced_url, spawner)


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    server = FaultServer(seed=7)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the deployment ----------------------------------------------------------------------------


def branch_models(faults: FaultServer) -> list[dict[str, Any]]:
    """One remote model per branch (``fan-0`` …), so each branch has its own latency script;
    one call at a time each, and no quick in-call retry that would hide a cut call."""
    return [
        {
            "name": f"fan-{i}",
            "provider": "openai",
            "options": {"base_url": f"{faults.url}/v1"},
            "batching": {"max_batch_size": 1, "max_wait_ms": 0, "max_concurrency": 1},
            "limits": {"timeout_s": 90, "call_retries": 0},
            "max_attempts": 3,
        }
        for i in range(BRANCHES)
    ]


def latencies(faults: FaultServer, seconds: list[float]) -> None:
    faults.script([{"model": f"fan-{i}", "latency_s": s} for i, s in enumerate(seconds)])


def fanout_body(tag: str) -> dict[str, Any]:
    """Six branches, each asking its own model; ``user`` tells their calls apart at the fault
    server and the message comes back as the answer, so each result is known to be its own."""
    branches = [
        {
            "name": f"b{i}",
            "body": {
                "model": f"fan-{i}",
                "messages": [{"role": "user", "content": f"{tag} branch {i}"}],
                "max_tokens": 8,
                "user": f"{tag}-b{i}",
            },
        }
        for i in range(BRANCHES)
    ]
    return {"branches": branches, "aggregate": "all", "deadline_s": 120}


def submit_fanout(api: Server, body: dict[str, Any]) -> str:
    response = api.client.post("/v1/fanouts", json=body)
    assert response.status_code == 202, response.text
    parent = response.json()
    assert parent["model"] == FANOUT
    job_id: str = parent["id"]
    return job_id


def start_api(spawner: Spawner, target: Target, config: Path) -> Server:
    """Start ``genspool api``; its start-up may be slow while workers start beside it on a
    busy machine (two shared cores), so it gets 90 s rather than the usual 30."""
    return spawner.server(config, command="api", db_url=target.url, env=target.env, startup_s=90)


def start_worker(spawner: Spawner, target: Target, config: Path, models: list[str]) -> Proc:
    """Start ``genspool worker`` serving ``models``; :func:`ready` waits for it."""
    return spawner.worker(target.url, config, env=target.env, models=models)


def ready(spawner: Spawner, *workers: Proc) -> None:
    """Wait until each worker has built its models and leases (it logs "worker serving")."""
    for worker in workers:

        def started(w: Proc = worker) -> bool:
            return "worker serving" in w.stderr() or not w.alive

        spawner.wait_until(started, timeout=60, what=f"{worker.name} to start")
        assert worker.alive, worker.report()


def owner(job_attempt: dict[str, Any], workers: dict[str, Proc]) -> str:
    """Which of ``workers`` (by name) ran an attempt: a worker's id holds its pid."""
    pid = str(job_attempt["worker"]).split(":")[1]
    names = [name for name, proc in workers.items() if str(proc.pid) == pid]
    assert len(names) == 1, f"attempt {job_attempt} was run by none of {list(workers)}"
    return names[0]


def children(api: Server, parent_id: str) -> dict[str, dict[str, Any]]:
    """The parent's child jobs by branch name, each with its history."""
    found: dict[str, dict[str, Any]] = {}
    for i in range(BRANCHES):
        page = api.client.get("/v1/jobs", params={"model": f"fan-{i}", "limit": 100}).json()
        for job in page["data"]:
            if job["metadata"].get("genspool.parent") == parent_id:
                found[job["metadata"]["genspool.branch"]] = api.get(job["id"])
    return found


def sse_until_end(api: Server, job_id: str, timeout: float) -> list[dict[str, Any]]:
    """Every event of ``GET /v1/jobs/{id}/events`` until the server ends the stream."""
    events: list[dict[str, Any]] = []
    with api.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(timeout)
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), f"not an SSE data line: {line!r}"
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def follow(api: Server, job_id: str, timeout: float = 90.0) -> Future[list[dict[str, Any]]]:
    """Follow the job's SSE on a thread of its own while the test goes on."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(sse_until_end, api, job_id, timeout)
    pool.shutdown(wait=False)
    return future


def branch_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["branch"] for e in events if "branch" in e]


def completed_calls(faults: FaultServer, tag: str) -> dict[str, int]:
    """Per branch, the calls the fault server answered: arrivals less those whose client left."""
    requests = faults.stats()["requests"]
    return {
        f"b{i}": len(r["arrivals"]) - len(r["aborted"])
        for i in range(BRANCHES)
        if (r := requests.get(f"{tag}-b{i}"))
    }


def answer(result: dict[str, Any]) -> str:
    content: str = result["choices"][0]["message"]["content"]
    return content


# -- the tests ---------------------------------------------------------------------------------


def test_fanout_across_two_apis_and_two_workers(
    spawner: Spawner, target: Target, faults: FaultServer
) -> None:
    seconds = [0.8 + 0.4 * i for i in range(BRANCHES)]  # 0.8 … 2.8 s, ending 0.4 s apart
    latencies(faults, seconds)
    config = spawner.models(branch_models(faults))
    # Both workers run parents; fan-0/1 only on A, fan-4/5 only on B, fan-2/3 on either: the
    # branches of one fan-out must land on both, and the parent's coordinator (on one of them)
    # must see the other's results.
    workers = {
        "A": start_worker(spawner, target, config, [FANOUT, "fan-0", "fan-1", "fan-2", "fan-3"]),
        "B": start_worker(spawner, target, config, [FANOUT, "fan-2", "fan-3", "fan-4", "fan-5"]),
    }
    api_a, api_b = start_api(spawner, target, config), start_api(spawner, target, config)
    ready(spawner, *workers.values())

    tag = uuid.uuid4().hex[:8]
    parent_id = submit_fanout(api_a, fanout_body(tag))
    events = follow(api_b, parent_id).result(timeout=100)
    parent = api_b.get(parent_id)

    assert parent["status"] == "succeeded", parent
    assert events[-1]["status"] == "succeeded" and events[-1]["id"] == parent_id, events[-3:]
    assert events[-1]["result"] == parent["result"]
    landed = branch_events(events)
    assert Counter(b["name"] for b in landed) == {f"b{i}": 1 for i in range(BRANCHES)}, landed
    assert all(e["status"] == "running" for e in events if "branch" in e)
    assert "branch" not in events[-1] and all("branch" in e for e in events[-1 - BRANCHES : -1])

    result = parent["result"]["body"]
    assert result["strategy"] == "all" and result["partial"] is False, result
    assert [b["name"] for b in result["branches"]] == [f"b{i}" for i in range(BRANCHES)]
    for i, branch in enumerate(result["branches"]):
        assert branch["status"] == "succeeded", branch
        assert answer(branch["result"]) == f"{tag} branch {i}"

    kids = children(api_b, parent_id)
    assert set(kids) == {f"b{i}" for i in range(BRANCHES)}
    # The branches landed in the order they ended, whichever process ran each.
    by_end = sorted(kids, key=lambda n: kids[n]["timestamps"]["succeeded"])
    assert [b["name"] for b in landed] == by_end
    ran_on = {name: owner(job["history"][-1], workers) for name, job in kids.items()}
    assert set(ran_on.values()) == {"A", "B"}, ran_on
    assert all(job["attempts"] == 1 for job in kids.values()), ran_on
    # In parallel: the parent took about its slowest branch (2.8 s), not their sum (10.8 s).
    stamps = parent["timestamps"]
    took = stamps["succeeded"] - stamps["running"]
    assert max(seconds) <= took < max(seconds) + 4.0, took
    assert completed_calls(faults, tag) == {f"b{i}": 1 for i in range(BRANCHES)}
    print(f"{target}: parent {took:.2f} s; branches ran on {dict(sorted(ran_on.items()))}")


def test_worker_killed_mid_fanout_the_parent_completes_and_no_branch_runs_twice(
    spawner: Spawner, target: Target, faults: FaultServer
) -> None:
    # b0 and b1 end quickly; b2..b5 are still waiting on the fault server when A is killed.
    latencies(faults, [0.3, 0.6, 60, 60, 60, 60])
    config = spawner.models(branch_models(faults))
    every = [FANOUT, *(f"fan-{i}" for i in range(BRANCHES))]
    # A starts alone, so it takes the parent and every branch; B is there before the kill.
    workers = {"A": start_worker(spawner, target, config, every)}
    api_a, api_b = start_api(spawner, target, config), start_api(spawner, target, config)
    ready(spawner, workers["A"])

    tag = uuid.uuid4().hex[:8]
    parent_id = submit_fanout(api_a, fanout_body(tag))
    events = follow(api_b, parent_id, timeout=120)
    slow = [f"{tag}-b{i}" for i in range(2, BRANCHES)]

    def calls_in_flight() -> bool:
        seen = faults.stats()["requests"]
        return all(k in seen and not seen[k]["aborted"] for k in slow)

    spawner.wait_until(calls_in_flight, timeout=30, what="the slow branches' calls")

    def quick_ones_ended() -> bool:
        kids = children(api_a, parent_id)
        return all(kids.get(f"b{i}", {}).get("status") == "succeeded" for i in (0, 1))

    spawner.wait_until(quick_ones_ended, timeout=30, what="the quick branches to end")
    workers["B"] = start_worker(spawner, target, config, every)
    ready(spawner, workers["B"])
    before = children(api_a, parent_id)
    assert {n: j["status"] for n, j in before.items()} == {
        f"b{i}": "succeeded" if i < 2 else "running" for i in range(BRANCHES)
    }
    assert api_a.get(parent_id)["status"] == "running"
    running_on = {owner(j["history"][-1], workers) for j in before.values()}
    assert running_on == {"A"} and owner(api_a.get(parent_id)["history"][-1], workers) == "A"

    workers["A"].kill()  # SIGKILL: no drain, no hand-back; its calls' connections close
    killed_at = time.time()
    assert workers["A"].popen.returncode == -signal.SIGKILL
    spawner.wait_until(
        lambda: all(len(faults.stats()["requests"][k]["aborted"]) == 1 for k in slow),
        timeout=10,
        what="the fault server to see the cut calls' connections close",
    )
    latencies(faults, [0.3] * BRANCHES)  # the calls made again answer at once

    parent = api_b.wait(parent_id, timeout=60)
    seen = events.result(timeout=30)
    assert parent["status"] == "succeeded", parent
    history = parent["history"]
    assert [owner(h, workers) for h in history] == ["A", "B"], history
    assert history[-1]["started_at"] > killed_at

    result = parent["result"]["body"]
    assert result["partial"] is False, result
    assert [b["name"] for b in result["branches"]] == [f"b{i}" for i in range(BRANCHES)]
    for i, branch in enumerate(result["branches"]):
        assert branch["status"] == "succeeded", branch
        assert answer(branch["result"]) == f"{tag} branch {i}"

    after = children(api_b, parent_id)
    assert set(after) == set(before)
    for name, job in after.items():
        assert job["id"] == before[name]["id"]  # the second coordinator found the same children
        assert job["status"] == "succeeded"
        assert answer(job["result"]["body"]) == answer(result["branches"][int(name[1:])]["result"])
        ran = [owner(h, workers) for h in job["history"]]
        assert ran == (["A"] if name in ("b0", "b1") else ["A", "B"]), (name, job["history"])
        assert [h["outcome"] for h in job["history"]][-1] == "succeeded"

    # At the fault server: each branch answered once; the cut ones were called a second time.
    assert completed_calls(faults, tag) == {f"b{i}": 1 for i in range(BRANCHES)}
    stats = faults.stats()["requests"]
    assert [stats[f"{tag}-b{i}"]["count"] for i in range(BRANCHES)] == [1, 1, 2, 2, 2, 2]

    # Over SSE on the other API process: every branch landed, and the final event. A branch
    # that ended before the kill is announced again by the second coordinator, which cannot
    # know whether the first one did (at least once); the others land exactly once.
    assert seen[-1]["status"] == "succeeded" and seen[-1]["result"] == parent["result"]
    landed = Counter(b["name"] for b in branch_events(seen))
    assert set(landed) == {f"b{i}" for i in range(BRANCHES)}, landed
    assert all(landed[f"b{i}"] == 1 for i in range(2, BRANCHES)), landed
    assert all(landed[f"b{i}"] <= 2 for i in range(2)), landed
    took = parent["timestamps"]["succeeded"] - killed_at
    print(f"{target}: parent done {took:.2f} s after the kill; branch events {dict(landed)}")
