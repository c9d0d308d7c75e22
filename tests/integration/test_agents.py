"""Agents served as models, end to end: a models file (``tools:``, ``agents:``) read as
``genspool serve`` reads it, the agent's model on the fault server (scripted to answer with
``tool_calls``, then with text), its HTTP tools on a real server on loopback, and the API with
a worker in process.

The agent calls an allowed tool, a declared tool it is not allowed, and a tool that times out,
then answers: every call is a step of the job (name, outcome, duration), in its result and in
its events, and what a refused or failed call returned is what the model read next. The loop's
own rules (schemas, rate limits, deadlines) are in ``tests/integration/test_agent_loop.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Request

from genspool.agents.config import agent_models
from genspool.backends import JobFilter
from genspool.config import ModelConfig, read_models_file
from genspool.testing.faults import FaultServer
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, FAST_RETRY, As, Keys, make_keys
from tests.helpers.upstream import served

#: How long the slow tool would take, and how long the agent lets it.
SLOW_TOOL_S = 3.0
SLOW_TOOL_TIMEOUT_S = 0.3
#: The agent's model answers each call after this long: time for a test to subscribe to the
#: job's events before the first step ends.
MODEL_LATENCY_S = 0.2


@dataclass
class ToolServer:
    """What the tools' HTTP server saw: calls per tool, and how long each slow call lasted
    before its caller left (or it finished)."""

    url: str = ""
    calls: dict[str, int] = field(default_factory=dict)
    slow_lasted: list[float] = field(default_factory=list)


def tool_app(seen: ToolServer) -> FastAPI:
    app = FastAPI()

    @app.post("/weather")
    async def weather(request: Request) -> dict[str, Any]:
        seen.calls["weather"] = seen.calls.get("weather", 0) + 1
        return {"city": (await request.json())["city"], "sky": "clear"}

    @app.post("/wipe")
    async def wipe() -> dict[str, Any]:
        seen.calls["wipe"] = seen.calls.get("wipe", 0) + 1  # must never happen
        return {"wiped": True}

    @app.post("/slow")
    async def slow(request: Request) -> dict[str, Any]:
        seen.calls["slow"] = seen.calls.get("slow", 0) + 1
        started = time.monotonic()
        while time.monotonic() - started < SLOW_TOOL_S and not await request.is_disconnected():
            await asyncio.sleep(0.02)
        seen.slow_lasted.append(time.monotonic() - started)
        return {"late": True}

    return app


@pytest.fixture(scope="module")
def tools() -> Iterator[ToolServer]:
    seen = ToolServer()
    with served(tool_app(seen)) as url:
        seen.url = url.removesuffix("/v1")
        yield seen


def call(name: str, arguments: dict[str, Any], n: int) -> dict[str, Any]:
    """An assistant turn asking for one tool call."""
    function = {"name": name, "arguments": orjson.dumps(arguments).decode()}
    tool_call = {"id": f"call_{n}", "type": "function", "function": function}
    return {"role": "assistant", "content": None, "tool_calls": [tool_call]}


ANSWER = "It is clear in Oslo."
#: The agent's model, turn by turn (the fault server picks the turn by the number of assistant
#: messages in the request): an allowed tool, a tool it may not call, a tool that times out.
REPLIES = [
    call("weather", {"city": "Oslo"}, 1),
    call("wipe_disk", {}, 2),
    call("slow_lookup", {"q": "tides"}, 3),
    {"role": "assistant", "content": ANSWER},
]
EXPECTED_STEPS = [
    ("model", "planner", "ok"),
    ("tool", "weather", "ok"),
    ("model", "planner", "ok"),
    ("tool", "wipe_disk", "refused"),
    ("model", "planner", "ok"),
    ("tool", "slow_lookup", "timeout"),
    ("model", "planner", "ok"),
]


def models_file(path: Path, faults: FaultServer, tools: ToolServer) -> Path:
    path.write_text(
        f"""
models:
  - name: planner
    provider: openai
    options: {{base_url: "{faults.url}/v1"}}
    max_attempts: 1
    limits: {{call_retries: 0}}
tools:
  - name: weather
    description: The weather in a city now.
    parameters: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
    http: {{url: "{tools.url}/weather"}}
    timeout_s: 5
    scope: read
  - name: wipe_disk
    description: Declared here, but no agent may call it.
    http: {{url: "{tools.url}/wipe"}}
  - name: slow_lookup
    parameters: {{type: object, properties: {{q: {{type: string}}}}}}
    http: {{url: "{tools.url}/slow"}}
    timeout_s: {SLOW_TOOL_TIMEOUT_S}
agents:
  - name: assistant
    model: planner
    tools: [weather, slow_lookup]
    max_steps: 6
    deadline_s: 30
    system: You answer with the help of tools.
"""
    )
    return path


@pytest.fixture
async def gs(tmp_path: Path, tools: ToolServer) -> AsyncIterator[InProcess]:
    faults = FaultServer()
    faults.start()
    faults.script([{"model": "planner", "latency_s": MODEL_LATENCY_S, "replies": REPLIES}])
    try:
        found = read_models_file(models_file(tmp_path / "models.yaml", faults, tools))
        models: list[ModelConfig] = [*found.models, *agent_models(found)]
        async with serve(models, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as running:
            yield running
    finally:
        faults.stop()


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


USER = {"model": "assistant", "messages": [{"role": "user", "content": "Weather in Oslo?"}]}


def kinds(steps: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(s["type"], s["name"], s["outcome"]) for s in steps]


async def test_an_agent_job_records_every_step_in_its_result_and_its_events(
    gs: InProcess, keys: Keys, tools: ToolServer
) -> None:
    caller = As(gs, keys.a)  # submit and read: every tool's scope
    before = dict(tools.calls)
    submitted = await caller.request("POST", "/v1/jobs", json={"url": CHAT, "body": USER})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    events = await _events(gs, keys.a, job_id)
    job = (await caller.get(job_id)).json()

    assert job["status"] == "succeeded", job
    answer = job["result"]["body"]
    assert answer["model"] == "assistant"
    assert answer["choices"][0]["message"]["content"] == ANSWER
    steps = answer["steps"]
    assert kinds(steps) == EXPECTED_STEPS
    weather, refused, slow = steps[1], steps[3], steps[5]
    assert weather["result"] == {"city": "Oslo", "sky": "clear"}
    assert weather["arguments"] == {"city": "Oslo"} and weather["call_id"] == "call_1"
    assert "not allowed for this agent; it may call: weather, slow_lookup" in refused["error"]
    assert f"did not answer within {SLOW_TOOL_TIMEOUT_S:g} s" in slow["error"]
    # Durations: a refusal is decided at once; the slow tool was given its timeout, no more.
    assert refused["duration_s"] < 0.1, refused
    assert SLOW_TOOL_TIMEOUT_S <= slow["duration_s"] < SLOW_TOOL_TIMEOUT_S + 0.5, slow
    for model_step in steps[::2]:
        assert model_step["duration_s"] >= MODEL_LATENCY_S, model_step
        assert model_step["usage"]["total_tokens"] > 0
    assert answer["usage"]["total_tokens"] == sum(s["usage"]["total_tokens"] for s in steps[::2])

    # The tools' server: the allowed one called once, the refused one never, the slow one
    # left by its caller at the timeout.
    assert tools.calls.get("weather", 0) - before.get("weather", 0) == 1
    assert tools.calls.get("wipe", 0) == 0
    await _until(lambda: len(tools.slow_lasted) > 0)
    assert tools.slow_lasted[-1] < SLOW_TOOL_S / 2, tools.slow_lasted

    # What the model read after each tool call: the model calls are child jobs of the agent's.
    reads = await _tool_messages(gs, job_id)
    assert reads["step-2"] == {"city": "Oslo", "sky": "clear"}
    assert "not allowed" in reads["step-3"]["error"]
    assert "did not answer" in reads["step-4"]["error"]

    seen = [e["step"] for e in events if "step" in e]
    assert kinds(seen) == EXPECTED_STEPS  # one event per step, as each ended
    assert events[-1]["status"] == "succeeded"


async def test_the_openai_surface_runs_the_agent_and_a_key_without_the_scope_is_refused(
    gs: InProcess, keys: Keys, tools: ToolServer
) -> None:
    full = await As(gs, keys.a).request("POST", CHAT, json=USER)
    assert full.status_code == 200, full.text
    body = full.json()
    assert body["object"] == "chat.completion" and body["model"] == "assistant"
    assert body["choices"][0]["message"]["content"] == ANSWER
    assert kinds(body["steps"]) == EXPECTED_STEPS

    before = tools.calls.get("weather", 0)
    narrow = await As(gs, keys.a_submit).request("POST", CHAT, json=USER)  # no "read" scope
    assert narrow.status_code == 200, narrow.text
    steps = narrow.json()["steps"]
    assert (steps[1]["name"], steps[1]["outcome"]) == ("weather", "refused")
    assert "needs the 'read' scope" in steps[1]["error"] and "it has: submit" in steps[1]["error"]
    assert tools.calls.get("weather", 0) == before  # never called for that key


async def _events(gs: InProcess, key: str, job_id: str) -> list[dict[str, Any]]:
    """The job's SSE events until it ends."""
    seen: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with gs.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                seen.append(orjson.loads(line[5:]))
                if seen[-1]["status"] in ("succeeded", "failed", "cancelled"):
                    break
    return seen


async def _tool_messages(gs: InProcess, job_id: str) -> dict[str, Any]:
    """For each model call of the agent's job, the last tool result in its request."""
    jobs = await gs.queue.list_jobs(JobFilter(limit=100))
    out: dict[str, Any] = {}
    for job in jobs:
        if job.metadata.get("genspool.parent") != job_id:
            continue
        last = job.body["messages"][-1]
        if last["role"] == "tool":
            out[job.metadata["genspool.branch"]] = orjson.loads(last["content"])
    return out


async def _until(ok: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)
