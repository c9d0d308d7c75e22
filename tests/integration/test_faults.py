"""Resilience end to end against the fault-injecting model server (genspool.testing.faults, a
real HTTP server on loopback that misbehaves on purpose): a real ``genspool serve`` process with
an ``openai`` model pointed at it, job retries and dead letters under a mix of faults, the
circuit breaker opening and closing, fallbacks, and in-call retries; and the server's own
promises to the tests that use it: per-model scripts (latencies, outcomes, an agent's replies),
calls aborted by a client that leaves, and the requests in flight."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from genspool.config import ModelConfig
from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, Request
from genspool.providers.openai_http import OpenAIProvider
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


# -- the fault server's own features: scripts, aborts, in flight -------------------------------


def ask(model: str, content: str = "hi", **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **more}


async def timed(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]]
) -> list[tuple[float, httpx.Response]]:
    """Each of ``bodies`` sent in turn, on one kept-alive connection, with its time to answer."""
    measured = []
    for body in bodies:
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=body)
        measured.append((time.perf_counter() - started, response))
    return measured


async def test_a_script_gives_each_model_its_latency(tmp_path: Path) -> None:
    rules = [
        {"model": "fast-50", "latency_s": 0.05},
        {"model": "mid-100", "latency_s": 0.1},
        {"model_prefix": "slow-", "latency_s": 0.4},
        {"model_prefix": "slow-", "latency_s": 2.0},  # never used: the first match decides
    ]
    latency = {"fast-50": 0.05, "mid-100": 0.1, "slow-400": 0.4, "unscripted": 0.0}
    script = tmp_path / "rules.json"
    script.write_text(json.dumps({"rules": rules}))
    # A process of its own and warm connections: what is timed is the server's wait, not this
    # process's threads taking turns or connections being opened.
    server = FaultProcess("--script", str(script))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            await asyncio.gather(*(client.get("/v1/models") for _ in latency))
            runs = [timed(client, [ask(m, f"{m} {i}") for i in range(3)]) for m in latency]
            measured = dict(zip(latency, await asyncio.gather(*runs), strict=True))
            stats = (await client.get("/_faults/stats")).json()
            listed = (await client.get("/_faults/script")).json()["rules"]
    finally:
        server.close()
    assert listed == rules
    for model, answers in measured.items():
        for i, (seconds, response) in enumerate(answers):
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == f"{model} {i}"
            # Never early; late by no more than a busy 2-core machine delays a loopback call.
            assert latency[model] - 0.002 <= seconds < latency[model] + 0.25, (model, seconds)
    typical = {m: statistics.median(s for s, _ in answers) for m, answers in measured.items()}
    assert typical["unscripted"] < typical["fast-50"] < typical["mid-100"] < typical["slow-400"]
    assert {m: v["requests"] for m, v in stats["by_model"].items()} == dict.fromkeys(latency, 3)
    assert all(v["max_in_flight"] == 1 for v in stats["by_model"].values())  # one at a time


async def test_a_script_decides_outcomes_and_leaves_other_models_to_the_draw() -> None:
    rules: list[dict[str, Any]] = [
        {"model": "down", "outcome": "error", "status": 503},
        {"model": "busy", "outcome": "429"},
        {"model": "broken", "outcome": "malformed"},
        {"model": "gone", "outcome": "reset"},
        {"model": "fixed", "reply": "always this"},
    ]
    with FaultServer(scripts=rules, error_rate=1.0, error_statuses=[502], retry_after_s=0.5) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            down = await client.post("/v1/chat/completions", json=ask("down"))
            busy = await client.post("/v1/chat/completions", json=ask("busy"))
            broken = await client.post("/v1/chat/completions", json=ask("broken"))
            with pytest.raises(httpx.TransportError):
                await client.post("/v1/chat/completions", json=ask("gone"))
            fixed = await client.post("/v1/chat/completions", json=ask("fixed", "echo me"))
            streamed = await client.post("/v1/chat/completions", json=ask("fixed", stream=True))
            drawn = await client.post("/v1/chat/completions", json=ask("unscripted"))
            stats = (await client.get("/_faults/stats")).json()
    assert down.status_code == 503 and busy.status_code == 429 and drawn.status_code == 502
    assert busy.headers["retry-after"] == "0.5"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content)
    for answer in (fixed, streamed):  # a streamed request gets the one body, as before
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["choices"][0]["message"]["content"] == "always this"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] == 2
    assert stats["outcomes"] == {"503": 1, "429": 1, "malformed": 1, "reset": 1, "ok": 2, "502": 1}


WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
}
AGENT = {
    "model": "agent",
    "replies": [
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        {"role": "assistant", "content": "It is 12 degrees in Oslo."},
    ],
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object"}},
}


def test_replies_script_a_tool_calling_conversation() -> None:
    with FaultServer(scripts=[AGENT]) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
        messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
        first = client.chat.completions.create(
            model="agent", messages=messages, tools=[WEATHER_TOOL]
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert call.id == "call_1" and call.type == "function"
        assert call.function.name == "weather"
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "12 degrees"})
        second = client.chat.completions.create(model="agent", messages=messages)
        assert second.choices[0].finish_reason == "stop"
        assert second.choices[0].message.content == "It is 12 degrees in Oslo."
        assert not second.choices[0].message.tool_calls
        messages += [second.choices[0].message.model_dump(exclude_none=True)]
        messages += [{"role": "user", "content": "And tomorrow?"}]
        third = client.chat.completions.create(model="agent", messages=messages)
        assert third.choices[0].message.content == "It is 12 degrees in Oslo."  # clamped
        for answer in (first, second, third):
            usage = answer.usage
            assert usage is not None and usage.completion_tokens > 0
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert first.usage is not None and second.usage is not None
        assert second.usage.prompt_tokens > first.usage.prompt_tokens
        client.close()


async def test_genspools_streamed_call_takes_a_scripted_reply() -> None:
    """genspool streams a chat someone listens to; the fault server answers with one body."""
    with FaultServer(scripts=[{"model": "fixed", "reply": "a scripted answer"}]) as url:
        provider = OpenAIProvider("fixed", base_url=f"{url}/v1")
        request = Request(CHAT, ask("fixed"), on_token=lambda _: None, stream=True)
        [result] = await provider.handle([request])
        await provider.aclose()
    assert not isinstance(result, ModelError), result
    assert result["choices"][0]["message"]["content"] == "a scripted answer"


def wait_for(probe: Any, timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert found, "timed out"
    return found


def test_a_client_that_leaves_mid_latency_aborts_the_call() -> None:
    rules: list[dict[str, Any]] = [
        {"model": "slow-400", "latency_s": 0.4},
        {"model": "stuck", "outcome": "hang"},
    ]
    with FaultServer(scripts=rules, hang_s=30) as url:
        for model in ("slow-400", "stuck"):
            with (
                httpx.Client(base_url=url, timeout=0.1) as client,
                pytest.raises(httpx.ReadTimeout),
            ):
                client.post("/v1/chat/completions", json=ask(model, f"{model} call"))
        stats = wait_for(
            lambda: (s := httpx.get(f"{url}/_faults/stats").json())["aborted"] == 2 and s
        )
    assert stats["in_flight"] == 0 and stats["outcomes"] == {"ok": 1, "hang": 1}
    for key in ("slow-400 call", "stuck call"):
        seen = stats["requests"][key]
        # The connection closed at the client's 100 ms timeout, long before the answer was due.
        [after] = seen["aborted_after_s"]
        assert 0.09 <= after < 0.3, (key, after)
        assert abs(seen["aborted"][0] - seen["arrivals"][0] - after) < 0.05


def test_an_aborted_call_gets_no_late_answer() -> None:
    """A raw socket half-closes after its request and keeps reading: the server closes the
    connection without writing a byte, well before the 400 ms answer would have been due."""
    body = json.dumps(ask("slow-400", "raw")).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with FaultServer(scripts=[{"model": "slow-400", "latency_s": 0.4}]) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(head.encode() + body)
            started = time.monotonic()
            sock.shutdown(socket.SHUT_WR)
            received = sock.recv(65536)  # b"": the server closed it, so nothing can follow
            elapsed = time.monotonic() - started
        stats = httpx.get(f"{url}/_faults/stats").json()
    assert received == b"" and elapsed < 0.2, (received, elapsed)
    assert stats["aborted"] == 1 and stats["requests"]["raw"]["aborted_after_s"][0] < 0.2
    assert stats["in_flight"] == 0


def read_answers(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    """``n`` JSON answers read off one connection, in order."""
    data, answers = b"", list[dict[str, Any]]()
    while len(answers) < n:
        end = data.find(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", data[:end]) if end >= 0 else None
        if length and len(data) >= end + 4 + int(length[1]):
            body_end = end + 4 + int(length[1])
            answers.append(json.loads(data[end + 4 : body_end]))
            data = data[body_end:]
            continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(answers)} answers"
        data += chunk
    return answers


def test_a_watched_connection_still_serves_kept_alive_and_pipelined_requests() -> None:
    """Watching for the client leaving reads ahead: the connection must go on serving the
    requests that follow on it, one after the other and sent all at once."""

    def raw(content: str) -> bytes:
        body = json.dumps(ask("mid-50", content)).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
        return f"{head}\r\n\r\n".encode() + body

    with FaultServer(scripts=[{"model": "mid-50", "latency_s": 0.05}]) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            answers: list[dict[str, Any]] = []
            for i in range(3):  # kept alive
                sock.sendall(raw(f"kept {i}"))
                answers += read_answers(sock, 1)
            sock.sendall(b"".join(raw(f"piped {i}") for i in range(3)))  # pipelined
            answers += read_answers(sock, 3)
        stats = httpx.get(f"{url}/_faults/stats").json()
    said = [a["choices"][0]["message"]["content"] for a in answers]
    assert said == [f"kept {i}" for i in range(3)] + [f"piped {i}" for i in range(3)]
    assert stats["aborted"] == 0 and stats["outcomes"] == {"ok": 6}


async def test_in_flight_counts_requests_overall_and_per_model() -> None:
    rules = [{"model": "wide", "latency_s": 0.3}, {"model": "narrow", "latency_s": 0.05}]
    n = 8
    with FaultServer(scripts=rules) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:

            async def stats() -> dict[str, Any]:
                got: dict[str, Any] = (await client.get("/_faults/stats")).json()
                return got

            wide = [
                client.post("/v1/chat/completions", json=ask("wide", f"w{i}")) for i in range(n)
            ]
            running = asyncio.gather(*wide)
            while (now := await stats())["in_flight"] < n:
                await asyncio.sleep(0.01)
            assert now["by_model"]["wide"]["in_flight"] == n
            for i in range(2):  # one after the other: never two at once
                await client.post("/v1/chat/completions", json=ask("narrow", f"n{i}"))
            assert all(r.status_code == 200 for r in await running)
            after = await stats()
            assert after["in_flight"] == 0 and after["max_in_flight"] == n + 1
            assert after["by_model"]["wide"] == {"in_flight": 0, "max_in_flight": n, "requests": n}
            narrow = {"in_flight": 0, "max_in_flight": 1, "requests": 2}
            assert after["by_model"]["narrow"] == narrow

            # A reset keeps the requests in flight as such, and starts the peak from them.
            three = asyncio.gather(
                *(client.post("/v1/chat/completions", json=ask("wide", f"r{i}")) for i in range(3))
            )
            while (await stats())["in_flight"] < 3:
                await asyncio.sleep(0.01)
            await client.post("/_faults/reset")
            during = await stats()
            assert (during["in_flight"], during["max_in_flight"]) == (3, 3)
            assert (
                set(during["by_model"]) == {"wide"} and during["by_model"]["wide"]["requests"] == 0
            )
            await three
            assert (await stats())["in_flight"] == 0
            assert (await client.get("/_faults/script")).json() == {"rules": []}


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"model": "m", "latency": 1}, "rules[1]: unknown keys ['latency']"),
        ({"latency_s": 1}, "rules[1]: give model or model_prefix"),
        (
            {"model": "m", "outcome": "ok", "status": 503},
            "rules[1].status: applies to outcome 'error'",
        ),
        ({"model": "m", "outcome": "error", "status": 404}, "rules[1].status: must be a 5xx code"),
        ({"model": "m", "latency_s": -1}, "rules[1].latency_s: must be a number of seconds >= 0"),
        ({"model": "m", "outcome": "slow"}, "rules[1].outcome: must be one of"),
        (
            {"model": "m", "outcome": "reset", "reply": "x"},
            "rules[1]: reply and replies need outcome 'ok' or 'hang'",
        ),
        ({"model": "m", "replies": [{"role": "user", "content": "x"}]}, "rules[1].replies[0].role"),
        (
            {
                "model": "m",
                "replies": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {**WEATHER_CALL, "function": {"name": "w", "arguments": {}}}
                        ],
                    }
                ],
            },
            "rules[1].replies[0].tool_calls[0].function.arguments: must be a JSON string",
        ),
    ],
)
def test_a_bad_rule_is_refused_saying_where(rule: dict[str, Any], problem: str) -> None:
    good = {"model": "kept", "reply": "still here"}
    with FaultServer(scripts=[good]) as url:
        refused = httpx.post(f"{url}/_faults/script", json={"rules": [good, rule]})
        assert refused.status_code == 400 and problem in refused.json()["error"]["message"]
        assert httpx.get(f"{url}/_faults/script").json() == {"rules": [good]}  # unchanged
    with pytest.raises(ValueError, match="rules\\[1\\]"):
        FaultServer(scripts=[good, rule])


def test_the_script_route_wants_an_object_of_rules() -> None:
    with FaultServer() as url:
        bodies: list[Any] = [[], {"rule": []}, {"rules": {"model": "m"}}]
        for body in bodies:
            refused = httpx.post(f"{url}/_faults/script", json=body)
            assert refused.status_code == 400, body
        assert "rules must be a list" in refused.json()["error"]["message"]
        server = FaultServer()
        assert server.script([{"model": "m", "reply": "x"}]) == [{"model": "m", "reply": "x"}]
        assert server.rules() == [{"model": "m", "reply": "x"}]


def test_the_fault_server_process_takes_a_script_file(tmp_path: Path) -> None:
    script = tmp_path / "rules.json"
    script.write_text(json.dumps({"rules": [AGENT, {"model": "fixed", "reply": "from a file"}]}))
    args = [sys.executable, "-m", "genspool.testing.faults", "--port", "0"]
    proc = subprocess.Popen([*args, "--script", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        answer = httpx.post(f"{url}/v1/chat/completions", json=ask("fixed")).json()
        assert answer["choices"][0]["message"]["content"] == "from a file"
        assert httpx.get(f"{url}/_faults/script").json()["rules"][0] == AGENT
    finally:
        proc.terminate()
        proc.wait(10)
    script.write_text(json.dumps([{"model": "m", "outcome": "later"}]))  # the bare list works too
    refused = subprocess.run(
        [*args, "--script", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert refused.returncode != 0
    assert f"--script {script}: rules[0].outcome: must be one of" in refused.stderr
