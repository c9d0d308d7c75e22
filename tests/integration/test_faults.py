"""Resilience end to end against the fault-injecting model server (genspool.testing.faults, a
real HTTP server on loopback that misbehaves on purpose): a real ``genspool serve`` process with
an ``openai`` model pointed at it, job retries and dead letters under a mix of faults, the
circuit breaker opening and closing, fallbacks, and in-call retries."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from genspool.config import ModelConfig
from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, Request
from genspool.runtime import ModelRegistry
from genspool.testing.faults import FaultServer
from tests.helpers.processes import Server, Spawner

ENV = {"GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.4"}


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    server = FaultServer(seed=7)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FaultProcess:
    """The fault server as a process of its own: its timings are not disturbed by this
    process's threads (the GIL), which a thousand submissions keep busy."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "genspool.testing.faults", "--port", "0", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def configure(self, **changes: Any) -> None:
        response = httpx.post(f"{self.url}/_faults", json=changes)
        assert response.status_code == 200, response.text

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/_faults/stats", timeout=30).json()
        return stats

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def fault_process() -> Iterator[FaultProcess]:
    server = FaultProcess("--seed", "7")
    try:
        yield server
    finally:
        server.close()


def remote(name: str, faults: FaultServer | FaultProcess, **more: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "options": {"base_url": f"{faults.url}/v1"}, **more}


def chat_body(model: str, i: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"job {i}"}],
        "max_tokens": 8,
        "user": f"job-{i}",  # how the fault server tells the jobs apart
    }


def submit_all(server: Server, bodies: list[dict[str, Any]]) -> list[str]:
    with ThreadPoolExecutor(16) as pool:
        return [job["id"] for job in pool.map(server.submit, bodies)]


def all_jobs(server: Server, model: str) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"model": model, "limit": 1000}
    while True:
        page = server.client.get("/v1/jobs", params=params).json()
        jobs.update((j["id"], j) for j in page["data"])
        if not page["has_more"]:
            return jobs
        params["after"] = page["next_cursor"]


def breaker(server: Server, model: str) -> dict[str, Any]:
    listed = server.client.get("/v1/breakers").json()["data"]
    found: dict[str, Any] = next(b for b in listed if b["model"] == model)
    return found


def test_a_thousand_jobs_under_faults_all_end_and_respect_their_limits(
    spawner: Spawner, fault_process: FaultProcess
) -> None:
    faults = fault_process
    max_attempts, timeout_s, retry_after_s, hang_s = 4, 1.0, 1.0, 5.0
    faults.configure(error_rate=0.3, hang_rate=0.1, hang_s=hang_s, rate_429=0.1)
    faults.configure(retry_after_s=retry_after_s)
    model = remote(
        "flaky",
        faults,
        max_attempts=max_attempts,
        # call_retries 0: one request per job attempt, so the server's counts are attempts
        limits={"timeout_s": timeout_s, "call_retries": 0},
        breaker={"enabled": False},  # the breaker has its own test; here, the queue's retries
        batching={"max_batch_size": 8, "max_concurrency": 16},
    )
    server = spawner.server([model], env=ENV)
    started = time.monotonic()
    ids = submit_all(server, [chat_body("flaky", i) for i in range(1000)])
    assert len(set(ids)) == 1000

    def ended() -> bool:
        rows = spawner.read_db(server.db, "SELECT status, count(*) FROM jobs GROUP BY status")
        counts = dict(rows)
        return counts.get("succeeded", 0) + counts.get("failed", 0) == 1000

    spawner.wait_until(ended, timeout=100, interval=0.5, what="all 1000 jobs to end")
    elapsed = time.monotonic() - started

    jobs, stats = all_jobs(server, "flaky"), faults.stats()["requests"]
    none: dict[str, Any] = {"count": 0, "arrivals": [], "outcomes": []}
    after_hangs: list[float] = []
    for i, job_id in enumerate(ids):
        seen = stats.get(f"job-{i}", none)
        check_job(jobs[job_id], seen, max_attempts, retry_after_s)
        after_hangs += gaps_after(seen, "hang")
    by_status = Counter(j["status"] for j in jobs.values())
    assert set(by_status) == {"succeeded", "failed"}, by_status
    assert by_status["succeeded"] > 850, by_status  # about 1 - 0.5**4 of them
    # A hung request was cut at the attempt's timeout: the job's next request came well
    # before the hang would have ended, and (on the whole: a busy machine delays some
    # requests on their way) not much sooner than the timeout.
    assert after_hangs and max(after_hangs) < hang_s, max(after_hangs)
    assert statistics.median(after_hangs) >= 0.7 * timeout_s, statistics.median(after_hangs)
    sent = sum(s["count"] for s in stats.values())
    attempts = sum(j["attempts"] for j in jobs.values())
    assert 0.95 * attempts <= sent <= attempts, (sent, attempts)
    print(f"1000 jobs in {elapsed:.1f} s: {dict(by_status)}, {sent} model requests")


def gaps_after(seen: dict[str, Any], outcome: str) -> list[float]:
    """Seconds from each request that ended with ``outcome`` to the job's next request."""
    arrivals, outcomes = seen["arrivals"], seen["outcomes"]
    return [
        arrivals[i + 1] - arrivals[i] for i in range(len(arrivals) - 1) if outcomes[i] == outcome
    ]


def check_job(
    job: dict[str, Any], seen: dict[str, Any], max_attempts: int, retry_after_s: float
) -> None:
    """One job's end, its attempts, and the spacing of its requests after a 429."""
    outcomes = seen["outcomes"]
    assert seen["count"] <= job["attempts"] <= max_attempts, (job, outcomes)
    if job["status"] == "succeeded":
        body = job["result"]["body"]
        assert body["model"] == "flaky" and body["usage"]["total_tokens"] > 0
        assert outcomes[-1] == "ok", outcomes  # the answer stored is the last one sent
    else:
        assert job["status"] == "failed", job
        assert job["attempts"] == max_attempts, job
        assert job["error"]["code"] in {"model_error", "model_timeout"}, job
        assert f"dead-lettered: {max_attempts} attempts used" in job["error"]["message"], job
    # Retry-After is a floor on the job's backoff (both times are the fault server's clock).
    assert all(gap >= retry_after_s - 0.01 for gap in gaps_after(seen, "429")), seen


def test_the_breaker_opens_stops_calls_and_closes_after_recovery(
    spawner: Spawner, faults: FaultServer
) -> None:
    cooldown = 2.0
    faults.configure(error_rate=1.0, error_statuses=[503])
    model = remote(
        "fragile",
        faults,
        limits={"timeout_s": 2, "call_retries": 0},
        max_attempts=30,  # enough to outlast the outage: each refusal uses an attempt
        breaker={"failures": 5, "cooldown_s": cooldown, "probes": 1},
        batching={"max_batch_size": 4, "max_concurrency": 2},
    )
    server = spawner.server([model], env=ENV)
    assert breaker(server, "fragile")["state"] == "closed"
    ids = submit_all(server, [chat_body("fragile", i) for i in range(20)])

    opened = spawner.wait_until(
        lambda: (b := breaker(server, "fragile"))["state"] == "open" and b,
        timeout=10,
        what="the breaker to open",
    )
    assert opened["opens_count"] == 1 and opened["failures"] >= 5
    time.sleep(0.3)  # calls in flight when it opened land
    before = faults.stats()["total"]
    time.sleep(max(0.0, opened["since"] + cooldown - time.time() - 0.3))
    assert faults.stats()["total"] == before, "calls reached the model while the breaker was open"

    reopened = spawner.wait_until(
        lambda: (b := breaker(server, "fragile"))["opens_count"] == 2 and b,
        timeout=10,
        what="the half-open probe to fail and open the breaker again",
    )
    assert reopened["state"] == "open" and reopened["previous"] == "half_open"
    assert faults.stats()["total"] == before + 1  # exactly one probe went through

    faults.configure(error_rate=0.0)  # the model recovers
    closed = spawner.wait_until(
        lambda: (b := breaker(server, "fragile"))["state"] == "closed" and b,
        timeout=10,
        what="the breaker to close",
    )
    assert closed["previous"] == "half_open" and closed["opens_count"] == 2
    listed = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert listed["fragile"]["breaker"]["state"] == "closed"

    done = server.wait_all(ids, timeout=30)
    assert {j["status"] for j in done} == {"succeeded"}, [j.get("error") for j in done]
    assert all(j["attempts"] <= 30 for j in done)
    refused = [j for j in done if j["attempts"] > 1]
    assert refused, "some jobs should have been retried through the outage"


def test_a_failing_model_falls_back_and_the_answer_says_who_answered(
    spawner: Spawner, faults: FaultServer
) -> None:
    faults.configure(error_rate=1.0)
    models = [
        remote(
            "primary",
            faults,
            limits={"call_retries": 0},
            breaker={"failures": 3},
            fallbacks=["backup"],
        ),
        {"name": "backup", "provider": "echo"},
    ]
    server = spawner.server(models, env=ENV)
    body = {"model": "primary", "messages": [{"role": "user", "content": "hello"}]}
    for _ in range(5):
        answer = server.client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "backup"
        assert answer.json()["choices"][0]["message"]["content"] == "hello"
    # Three failures opened primary's breaker: the last two went straight to the backup.
    assert faults.stats()["total"] == 3
    listed = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert listed["primary"]["breaker"]["state"] == "open"
    assert listed["backup"]["breaker"]["state"] == "disabled"


async def test_in_call_retries_recover_blips_within_their_bounds() -> None:
    with FaultServer(error_rate=0.3, rate_429=0.2, retry_after_s=0.1, seed=3) as url:
        cfg = ModelConfig(
            name="blippy",
            provider="openai",
            options={"base_url": f"{url}/v1"},
            limits={"call_retries": 3, "timeout_s": 5},
            breaker={"enabled": False},
        )
        registry = ModelRegistry([cfg])
        stack = registry.provider("blippy")
        requests = [Request(CHAT, {**chat_body("blippy", i), "user": f"r{i}"}) for i in range(60)]
        results = await stack.handle(requests)
        await registry.aclose()
        stats = await asyncio.to_thread(lambda: httpx.get(f"{url}/_faults/stats").json())
    for i, result in enumerate(results):
        seen = stats["requests"][f"r{i}"]
        assert seen["count"] <= 4  # 1 + call_retries
        if isinstance(result, ModelError):
            assert seen["count"] == 4 and "ok" not in seen["outcomes"]
        else:
            assert seen["outcomes"][-1] == "ok" and result["model"] == "blippy"
        for k in range(seen["count"] - 1):
            if seen["outcomes"][k] == "429":
                assert seen["arrivals"][k + 1] - seen["arrivals"][k] >= 0.1 - 0.01
    assert sum(not isinstance(r, ModelError) for r in results) >= 50


def test_the_fault_server_runs_as_a_process_on_loopback_only() -> None:
    args = [sys.executable, "-m", "genspool.testing.faults", "--port", "0", "--error-rate", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/v1/models").json()["object"] == "list"
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code >= 500
        assert httpx.post(f"{url}/_faults", json={"error_rate": 0}).status_code == 200
        answer = httpx.post(f"{url}/v1/chat/completions", json=body).json()
        assert answer["choices"][0]["message"]["content"] == "x"
        assert httpx.get(f"{url}/_faults/stats").json()["requests"]["x"]["count"] == 2
    finally:
        proc.terminate()
        proc.wait(10)
    refused = subprocess.run(
        [*args[:3], "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode != 0 and "127.0.0.1 only" in refused.stderr
