"""Tools of agents: their config, and :class:`ToolBox` running one call — against real HTTP
tools (a small FastAPI app served by uvicorn on loopback), real entry-point tools (the
functions below, named ``tests.unit.test_agent_tools:…``) and the memory backend's real
``reserve`` for rate limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from genspool.agents import AgentConfig, Step, ToolBox, ToolConfig, check_agents
from genspool.backends.memory import MemoryBackend
from genspool.exceptions import ConfigError
from tests.helpers.upstream import served

HERE = "tests.unit.test_agent_tools"
OBJ = {"type": "object", "properties": {}}
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


# -- entry-point tools ---------------------------------------------------------------------------


def add(a: float, b: float) -> float:
    return a + b


async def async_add(a: float, b: float) -> dict[str, float]:
    await asyncio.sleep(0)
    return {"sum": a + b}


async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def broken() -> None:
    raise ValueError("the tool broke")


def not_json() -> object:
    return object()


# -- an HTTP tool server ---------------------------------------------------------------------------

app = FastAPI()
HITS: list[dict[str, Any]] = []


@app.post("/echo")
async def echo(request: Request) -> dict[str, Any]:
    body = await request.json()
    HITS.append(body)
    return {"got": body, "auth": request.headers.get("x-token")}


@app.get("/query")
async def query(request: Request) -> dict[str, Any]:
    return {"query": dict(request.query_params)}


@app.post("/text")
async def text() -> PlainTextResponse:
    return PlainTextResponse("sunny, 21 C")


@app.post("/fail")
async def fail() -> JSONResponse:
    return JSONResponse({"detail": "upstream exploded"}, status_code=503)


@app.post("/sleep")
async def sleep() -> dict[str, str]:
    await asyncio.sleep(3)
    return {"late": "yes"}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with served(app) as url:
        yield url.removesuffix("/v1")


def http_tool(name: str, url: str, **kw: Any) -> ToolConfig:
    return ToolConfig.model_validate({"name": name, "parameters": OBJ, "http": {"url": url}, **kw})


def entry_tool(name: str, func: str, schema: dict[str, Any] = OBJ, **kw: Any) -> ToolConfig:
    return ToolConfig.model_validate(
        {"name": name, "parameters": schema, "entry_point": f"{HERE}:{func}", **kw}
    )


@pytest.fixture
async def box(base: str) -> AsyncIterator[ToolBox]:
    tools = [
        http_tool(
            "echo", f"{base}/echo", http={"url": f"{base}/echo", "headers": {"X-Token": "t"}}
        ),
        http_tool("query", f"{base}/query", http={"url": f"{base}/query", "method": "GET"}),
        http_tool("text", f"{base}/text"),
        http_tool("fail", f"{base}/fail"),
        http_tool("sleepy", f"{base}/sleep", timeout_s=0.3),
        http_tool("nowhere", "http://127.0.0.1:9/none"),
        entry_tool("add", "add", ADD_SCHEMA),
        entry_tool("async_add", "async_add", ADD_SCHEMA),
        entry_tool("slow", "slow", timeout_s=0.3),
        entry_tool("broken", "broken"),
        entry_tool("not_json", "not_json"),
        entry_tool("admin_only", "add", ADD_SCHEMA, scope="admin"),
        entry_tool("reader", "add", ADD_SCHEMA, scope="read"),
    ]
    toolbox = ToolBox(tools)
    yield toolbox
    await toolbox.aclose()


async def call(box: ToolBox, name: str, args: str = "{}", **kw: Any) -> Step:
    kw.setdefault("allowed", list(box.tools))
    kw.setdefault("scopes", ["submit"])
    return await box.call(name, args, **kw)


# -- config ----------------------------------------------------------------------------------------


def test_a_tool_reads_with_its_defaults() -> None:
    tool = entry_tool("add", "add", ADD_SCHEMA)
    assert (tool.timeout_s, tool.rpm, tool.scope) == (10.0, None, "submit")
    assert tool.openai_spec() == {
        "type": "function",
        "function": {"name": "add", "description": "", "parameters": ADD_SCHEMA},
    }


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"name": "has space"}, "should match pattern"),
        ({"name": "x" * 65}, "should match pattern"),
        ({"parameters": {"type": "objekt"}}, "not a valid JSON Schema at type"),
        ({"parameters": {"type": "object", "required": "a"}}, "not a valid JSON Schema"),
        ({"parameters": {"type": "string"}}, "must describe an object"),
        ({"http": {"url": "http://x/y"}}, "exactly one of 'http' or 'entry_point'"),
        ({"entry_point": None}, "exactly one of 'http' or 'entry_point'"),
        ({"entry_point": "no_such_module_xyz:f"}, "cannot import 'no_such_module_xyz'"),
        ({"entry_point": f"{HERE}:missing"}, f"{HERE!r} has no 'missing'"),
        ({"entry_point": f"{HERE}:HERE"}, "is not callable"),
        ({"entry_point": "not a path"}, "should match pattern"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"scope": "root"}, "'submit', 'read' or 'admin'"),
        ({"rpm": 0}, "greater than 0"),
        ({"retries": 2}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_tool_is_refused_saying_why(change: dict[str, Any], says: str) -> None:
    raw = {"name": "add", "parameters": OBJ, "entry_point": f"{HERE}:add", **change}
    with pytest.raises(ValidationError) as info:
        ToolConfig.model_validate(raw)
    assert says in str(info.value)


def test_a_bad_agent_is_refused_saying_why() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        AgentConfig(name="a", model="m", max_steps=0)
    with pytest.raises(ValidationError, match=r"lists \['x'\] more than once"):
        AgentConfig(name="a", model="m", tools=["x", "y", "x"])


def test_check_agents_names_what_does_not_agree() -> None:
    tools = [entry_tool("add", "add", ADD_SCHEMA), entry_tool("broken", "broken")]
    models = {"small", "big"}
    check_agents([AgentConfig(name="helper", model="small", tools=["add"])], tools, models)
    cases = [
        ([AgentConfig(name="h", model="small", tools=["add", "web"])], tools, "unknown tool"),
        (
            [AgentConfig(name="h", model="huge")],
            tools,
            r"unknown model 'huge' \(served: big, small\)",
        ),
        ([AgentConfig(name="big", model="small")], tools, "has the name of a model"),
        ([AgentConfig(name="h", model="small")] * 2, tools, r"agent name\(s\) \['h'\]"),
        ([], [*tools, tools[0]], r"tool name\(s\) \['add'\] declared more than once"),
    ]
    for agents, declared, says in cases:
        with pytest.raises(ConfigError, match=says):
            check_agents(agents, declared, models)


# -- calls that run --------------------------------------------------------------------------------


async def test_an_http_tool_gets_the_arguments_as_json_with_its_headers(box: ToolBox) -> None:
    step = await call(box, "echo", '{"city": "Oslo", "days": [1, 2]}', call_id="c1")
    assert step.outcome == "ok", step.error
    assert step.result == {"got": {"city": "Oslo", "days": [1, 2]}, "auth": "t"}
    public = step.public()
    assert public["type"] == "tool" and public["call_id"] == "c1"
    assert public["arguments"] == {"city": "Oslo", "days": [1, 2]}
    assert public["duration_s"] > 0 and abs(public["started_at"] - time.time()) < 5
    assert "error" not in public


async def test_a_get_tool_gets_the_arguments_as_the_query(box: ToolBox) -> None:
    step = await call(box, "query", '{"q": "rain", "n": 3, "exact": true}')
    assert step.result == {"query": {"q": "rain", "n": "3", "exact": "true"}}


async def test_a_text_answer_is_the_result_as_text(box: ToolBox) -> None:
    step = await call(box, "text")
    assert (step.outcome, step.result) == ("ok", "sunny, 21 C")


async def test_entry_points_run_plain_and_async(box: ToolBox) -> None:
    plain = await call(box, "add", '{"a": 2, "b": 3.5}')
    coro = await call(box, "async_add", '{"a": 1, "b": 1}')
    assert (plain.outcome, plain.result) == ("ok", 5.5)
    assert (coro.outcome, coro.result) == ("ok", {"sum": 2})


async def test_empty_arguments_are_no_arguments(box: ToolBox) -> None:
    assert (await call(box, "text", "")).outcome == "ok"


# -- calls that fail: outcomes, never exceptions ---------------------------------------------------


async def test_a_non_2xx_answer_is_an_error_naming_the_status(box: ToolBox) -> None:
    step = await call(box, "fail")
    assert step.outcome == "error"
    assert step.error is not None and "'fail' answered HTTP 503" in step.error
    assert "upstream exploded" in step.error
    assert step.public()["error"] == step.error and "result" not in step.public()


async def test_an_unreachable_tool_is_an_error(box: ToolBox) -> None:
    step = await call(box, "nowhere")
    assert step.outcome == "error"
    assert step.error is not None and "'nowhere' could not be called: ConnectError" in step.error


async def test_a_tool_past_its_timeout_is_cut_off(box: ToolBox) -> None:
    for name in ("slow", "sleepy"):
        t0 = time.monotonic()
        step = await call(box, name, '{"seconds": 3}' if name == "slow" else "{}")
        took = time.monotonic() - t0
        assert step.outcome == "timeout", (name, step)
        assert step.error == f"tool {name!r} did not answer within 0.3 s"
        assert 0.25 < took < 1.5 and 0.25 < step.duration_s < 1.5


async def test_time_left_shortens_the_timeout(box: ToolBox) -> None:
    step = await call(box, "slow", '{"seconds": 3}', time_left=0.1)
    assert step.outcome == "timeout" and step.duration_s < 0.28


async def test_a_raising_or_non_json_entry_point_is_an_error(box: ToolBox) -> None:
    raised = await call(box, "broken")
    assert (raised.outcome, raised.error) == (
        "error",
        "tool 'broken' raised ValueError: the tool broke",
    )
    odd = await call(box, "not_json")
    assert odd.outcome == "error"
    assert odd.error is not None and "'not_json' returned a value that is not JSON" in odd.error


async def test_a_tool_outside_the_allowlist_is_refused(box: ToolBox) -> None:
    step = await call(box, "add", '{"a": 1}', allowed=["echo", "text"])  # bad args: later check
    assert step.outcome == "refused"
    assert step.error == "tool 'add' is not allowed for this agent; it may call: echo, text"
    unknown = await call(box, "rm_rf", allowed=[])
    assert unknown.error == "tool 'rm_rf' is not allowed for this agent; it may call: no tools"


async def test_a_tool_beyond_the_callers_scopes_is_refused(box: ToolBox) -> None:
    step = await call(box, "admin_only", "not json", scopes=["submit", "read"])
    assert step.outcome == "refused"
    assert step.error == (
        "tool 'admin_only' needs the 'admin' scope, which the caller's API key lacks"
        " (it has: read, submit)"
    )
    assert (await call(box, "reader", '{"a": 1, "b": 2}', scopes=["read"])).outcome == "ok"
    assert (await call(box, "admin_only", '{"a": 1, "b": 2}', scopes=["admin"])).outcome == "ok"
    assert (await call(box, "reader", '{"a": 1, "b": 2}', scopes=["admin"])).outcome == "ok"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ('{"a": 1', "arguments of tool 'add' are not JSON: Expecting"),
        ('{"a": 1}', "do not match its schema: 'b' is a required property"),
        ('{"a": "one", "b": 2}', "do not match its schema at 'a': 'one' is not of type 'number'"),
        ('{"a": 1, "b": 2, "c": 3}', "Additional properties are not allowed ('c' was unexpected)"),
        ("[1, 2]", "[1, 2] is not of type 'object'"),
    ],
)
async def test_arguments_off_the_schema_are_an_error_the_model_can_read(
    box: ToolBox, args: str, says: str
) -> None:
    step = await call(box, "add", args)
    assert step.outcome == "error"
    assert step.error is not None and says in step.error, step.error
    assert step.public()["arguments"] == step.arguments


async def test_arguments_that_are_not_json_are_kept_as_text(box: ToolBox) -> None:
    step = await call(box, "add", "a=1")
    assert step.arguments == "a=1" and step.public()["arguments"] == "a=1"


# -- rate limits -----------------------------------------------------------------------------------


async def test_a_tool_over_its_rate_limit_waits_for_budget() -> None:
    backend = MemoryBackend()
    toolbox = ToolBox([entry_tool("add", "add", ADD_SCHEMA, rpm=60)], reserve=backend.reserve)
    calls = [
        toolbox.call("add", f'{{"a": {i}, "b": 1}}', allowed=["add"], scopes=["submit"])
        for i in range(60)
    ]
    burst = await asyncio.gather(*calls)  # a minute's budget may be spent at once
    assert [s.result for s in burst] == [i + 1 for i in range(60)]
    assert all(s.outcome == "ok" and s.waited_s == 0 for s in burst)
    t0 = time.monotonic()
    step = await toolbox.call("add", '{"a": 1, "b": 1}', allowed=["add"], scopes=["submit"])
    took = time.monotonic() - t0
    assert step.outcome == "ok" and 0.5 < step.waited_s <= 1.05
    assert 0.5 < took < 2.0 and step.duration_s >= step.waited_s
    assert step.public()["waited_s"] == pytest.approx(step.waited_s)


async def test_a_rate_limit_wait_past_the_timeout_is_not_started(base: str) -> None:
    backend = MemoryBackend()
    tool = http_tool("echo", f"{base}/echo", rpm=1, timeout_s=5)
    toolbox = ToolBox([tool], reserve=backend.reserve)
    try:
        first = await toolbox.call("echo", '{"n": 1}', allowed=["echo"], scopes=["submit"])
        before = len(HITS)
        t0 = time.monotonic()
        second = await toolbox.call("echo", '{"n": 2}', allowed=["echo"], scopes=["submit"])
    finally:
        await toolbox.aclose()
    assert first.outcome == "ok"
    assert second.outcome == "timeout" and time.monotonic() - t0 < 0.5
    assert second.error is not None and "over its rate limit (1/min)" in second.error
    assert "not called" in second.error and len(HITS) == before
