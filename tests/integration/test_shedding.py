"""Load shedding at the door, against a real ``genspool serve`` on SQLite.

The model is an echo model (named as such: it computes nothing) whose ``latency_ms`` and
``max_concurrency`` give it a known capacity, about 20 jobs/s. A burst of ten times that is
submitted; beyond ``max_queue_depth`` submissions get 429 with ``Retry-After`` and a message
that names the limit, and every job that was accepted completes.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.processes import Spawner

CHAT = "/v1/chat/completions"
SHED = {
    "name": "shed",
    "provider": "echo",
    "batching": {"max_batch_size": 1, "max_concurrency": 1},
    "admission": {"max_queue_depth": 20},
    "options": {"latency_ms": 50},
}
AGED = {
    "name": "aged",
    "provider": "echo",
    "batching": {"max_batch_size": 1, "max_concurrency": 1},
    "admission": {"max_queue_age_s": 1.0},
    "options": {"latency_ms": 400},
}


def _job(model: str, i: int) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": f"burst {i}"}]}
    return {"url": CHAT, "body": body}


def test_ten_times_capacity_is_shed_with_429_and_accepted_jobs_complete(spawner: Spawner) -> None:
    server = spawner.server([SHED, AGED])
    accepted, refused = [], []
    started = time.monotonic()
    for i in range(200):  # ~200 jobs/s for a second: ten times what the model does
        r = server.client.post("/v1/jobs", json=_job("shed", i))
        if r.status_code == 202:
            accepted.append(r.json()["id"])
        else:
            refused.append(r)
        time.sleep(max(0.0, started + (i + 1) / 200 - time.monotonic()))
    assert refused, "nothing was shed at ten times the capacity"
    for r in refused:
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        message = r.json()["error"]["message"]
        assert "max_queue_depth is 20" in message and "shed" in message, message
    assert len(accepted) >= 20
    done = server.wait_all(accepted, timeout=60)
    assert {j["status"] for j in done} == {"succeeded"}
    # once the queue has drained, submissions are accepted again
    server.submit(_job("shed", -1)["body"])


def test_a_queue_older_than_max_queue_age_sheds(spawner: Spawner) -> None:
    server = spawner.server([AGED])
    ids = [server.submit(_job("aged", i)["body"])["id"] for i in range(8)]  # ~3.2 s of work
    deadline = time.monotonic() + 10
    while True:
        r = server.client.post("/v1/jobs", json=_job("aged", 99))
        if r.status_code == 429:
            break
        ids.append(r.json()["id"])
        assert time.monotonic() < deadline, "the queue never became too old"
        time.sleep(0.1)
    assert "max_queue_age_s is 1" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert {j["status"] for j in server.wait_all(ids, timeout=60)} == {"succeeded"}
