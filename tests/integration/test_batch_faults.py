"""Batches against a remote model that fails, and one that is slow, through a real ``genspool
serve`` (SQLite file) and the official ``openai`` SDK; the remote is the fault server
(:mod:`genspool.testing.faults`, a real HTTP server on loopback) scripted per model.

Checked: lines whose model fails end in the error file and the others in the output, every
``custom_id`` exactly once across the two, with ``request_counts`` and ``usage`` agreeing with
the lines; a cancel at about half aborts the calls in flight at the remote (their connections
closed, counted by the fault server) instead of waiting for their answers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genspool.testing.faults import FaultServer
from tests.helpers.processes import Server, Spawner
from tests.integration.test_batches_api import ENDED, jsonl, line, read_lines, sdk, start, wait
from tests.integration.test_files_api import create_key


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    try:
        server.script([
            {"model": "fine", "latency_s": 0.01},
            {"model": "broken", "outcome": "error", "status": 500, "latency_s": 0.01},
            {"model": "slow", "latency_s": 2.0},
        ])  # fmt: skip
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "batch_faults.db"
    return path


@pytest.fixture(scope="module")
def key(module_spawner: Spawner, db: Path) -> str:
    return create_key(module_spawner, db, "acme", "submit,read")


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, upstream: FaultServer, key: str) -> Server:
    remote: dict[str, Any] = {"provider": "openai", "options": {"base_url": upstream.url + "/v1"}}
    models = [
        {"name": "fine", **remote, "batching": {"max_wait_ms": 0, "max_concurrency": 8}},
        {"name": "broken", **remote, "max_attempts": 1, "breaker": {"enabled": False}},
        {"name": "slow", **remote,
         "batching": {"max_batch_size": 1, "max_wait_ms": 0, "max_concurrency": 8}},
    ]  # fmt: skip
    return module_spawner.server(models, command="serve", db=db)


def test_failed_lines_go_to_the_error_file_each_custom_id_once(server: Server, key: str) -> None:
    a = sdk(server, key)
    sent = [line(f"r{i}", f"review {i}", model="broken" if i % 5 == 0 else "fine")
            for i in range(200)]  # fmt: skip
    done = wait(a, start(a, jsonl(sent)).id, timeout=120)
    assert done.status == "completed", done
    out, err = read_lines(a, done.output_file_id), read_lines(a, done.error_file_id)
    assert Counter(x["custom_id"] for x in out + err) == Counter(s["custom_id"] for s in sent)
    assert {x["custom_id"] for x in err} == {f"r{i}" for i in range(0, 200, 5)}
    assert all((x["error"] is not None and x["response"] is None) or x["response"] for x in err)
    assert all(x["response"]["status_code"] == 200 for x in out)
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (200, 160, 40)
    usage = done.usage
    assert usage is not None
    summed = Counter[str]()
    for x in out:
        summed.update(
            {k: v for k, v in x["response"]["body"]["usage"].items() if isinstance(v, int)}
        )
    assert usage.input_tokens == summed["prompt_tokens"] > 0
    assert usage.output_tokens == summed["completion_tokens"] > 0
    assert usage.total_tokens == summed["total_tokens"]


def test_cancel_aborts_the_calls_in_flight(server: Server, key: str, upstream: FaultServer) -> None:
    a = sdk(server, key)
    upstream.reset()
    upstream.script([{"model": "slow", "latency_s": 2.0}])
    sent = [line(f"s{i}", f"line {i}", model="slow") for i in range(80)]
    made = start(a, jsonl(sent))
    deadline = time.monotonic() + 60
    while (counts := a.batches.retrieve(made.id).request_counts) is None or counts.completed < 16:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    flying = upstream.stats()["by_model"]["slow"]["in_flight"]
    assert flying > 0
    cancelled_at = time.monotonic()
    assert a.batches.cancel(made.id).status == "cancelling"
    done = wait(a, made.id, timeout=30)
    took = time.monotonic() - cancelled_at
    assert done.status == "cancelled"
    stats = upstream.stats()
    assert stats["by_model"]["slow"]["in_flight"] == 0
    assert stats["aborted"] >= 1, stats  # connections closed, answers not waited for
    assert took < 2.0 + 1.5, f"the cancel waited {took:.1f} s: calls were not aborted"
    out, err = read_lines(a, done.output_file_id), read_lines(a, done.error_file_id)
    assert Counter(x["custom_id"] for x in out + err) == Counter(s["custom_id"] for s in sent)
    assert done.status in ENDED
