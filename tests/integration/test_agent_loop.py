"""The agent loop over real tools (an HTTP tool served by uvicorn on loopback, entry-point tools
defined below as ``tests.integration.test_agent_loop:…``) and a scripted model.

The model is a fake, named as such (:class:`ScriptedModel`): it replays the chat completions a
test gives it and records the requests it got. The real model path — the worker submitting each
model call as a child job — is the lead's integration, tested against the fault server there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from genspool.agents import AgentConfig, AgentDeadline, AgentStepLimit, Step, ToolBox, ToolConfig
from genspool.agents import run_agent as _run_agent
from genspool.exceptions import InvalidRequest, ModelError, ModelTimeout
from tests.helpers.upstream import served

HERE = "tests.integration.test_agent_loop"
NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def multiply(a: int, b: int) -> int:
    return a * b


async def nap(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


app = FastAPI()


@app.post("/weather")
async def weather(request: Request) -> dict[str, Any]:
    city = (await request.json())["city"]
    return {"city": city, "sky": "clear"}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with served(app) as url:
        yield url.removesuffix("/v1")


@pytest.fixture
async def toolbox(base: str) -> AsyncIterator[ToolBox]:
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    sleep = {"type": "object", "properties": {"seconds": {"type": "number"}}}
    raw = [
        {"name": "weather", "parameters": city, "http": {"url": f"{base}/weather"}},
        {"name": "multiply", "parameters": NUMBERS, "entry_point": f"{HERE}:multiply"},
        {"name": "nap", "parameters": sleep, "entry_point": f"{HERE}:nap"},
        {"name": "secret", "parameters": NUMBERS, "entry_point": f"{HERE}:multiply"},
        {
            "name": "wipe",
            "parameters": NUMBERS,
            "entry_point": f"{HERE}:multiply",
            "scope": "admin",
        },
    ]
    box = ToolBox([ToolConfig.model_validate(t) for t in raw])
    yield box
    await box.aclose()


AGENT = AgentConfig(
    name="helper",
    model="small",
    tools=["weather", "multiply", "nap", "wipe"],
    max_steps=4,
    deadline_s=10,
    system="Use the tools.",
)


class ScriptedModel:
    """A fake model (it decides nothing): answers with the scripted turns in order, after
    ``delay`` seconds each; raises a turn that is an exception. Keeps every request."""

    def __init__(self, *turns: dict[str, Any] | Exception, delay: float = 0.0) -> None:
        self.turns, self.delay = list(turns), delay
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(json.loads(json.dumps(body)))  # a copy, as sent
        await asyncio.sleep(self.delay)
        turn = self.turns.pop(0) if len(self.turns) > 1 else self.turns[0]
        if isinstance(turn, Exception):
            raise turn
        return turn


def asks(*calls: tuple[str, dict[str, Any] | str], tokens: int = 10) -> dict[str, Any]:
    tool_calls = [
        {
            "id": f"call_{name}_{i}",
            "type": "function",
            "function": {"name": name, "arguments": a if isinstance(a, str) else json.dumps(a)},
        }
        for i, (name, a) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return completion(message, tokens)


def answers(text: str, tokens: int = 10) -> dict[str, Any]:
    return completion({"role": "assistant", "content": text}, tokens)


def completion(message: dict[str, Any], tokens: int) -> dict[str, Any]:
    usage = {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "small",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


USER = {"messages": [{"role": "user", "content": "Weather in Oslo, and 6 x 7?"}]}


async def run(
    model: ScriptedModel,
    toolbox: ToolBox,
    *,
    agent: AgentConfig = AGENT,
    scopes: tuple[str, ...] = ("submit",),
    body: dict[str, Any] = USER,
    **kw: Any,
) -> tuple[dict[str, Any], list[Step]]:
    seen: list[Step] = []

    async def on_step(step: Step) -> None:
        seen.append(step)

    out = await _run_agent(
        agent, body, call_model=model, toolbox=toolbox, scopes=scopes, on_step=on_step, **kw
    )
    return out, seen


async def test_the_model_calls_tools_then_answers(toolbox: ToolBox) -> None:
    model = ScriptedModel(
        asks(("weather", {"city": "Oslo"}), ("multiply", {"a": 6, "b": 7}), tokens=10),
        answers("Clear in Oslo; 42.", tokens=30),
    )
    out, seen = await run(model, toolbox, body={**USER, "temperature": 0})
    assert out["choices"][0]["message"]["content"] == "Clear in Oslo; 42."
    assert out["model"] == "helper"
    assert out["usage"] == {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}
    first, second = model.requests
    assert first["model"] == "small" and first["temperature"] == 0
    assert first["messages"] == [{"role": "system", "content": "Use the tools."}, *USER["messages"]]
    offered = [t["function"]["name"] for t in first["tools"]]
    assert offered == ["weather", "multiply", "nap", "wipe"]  # not "secret": not allowlisted
    assistant, weather, product = second["messages"][2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "weather"
    assert weather == {
        "role": "tool",
        "tool_call_id": "call_weather_0",
        "content": json.dumps({"city": "Oslo", "sky": "clear"}),
    }
    assert product == {"role": "tool", "tool_call_id": "call_multiply_1", "content": "42"}
    kinds = [(s["type"], s["name"], s["outcome"]) for s in out["steps"]]
    assert kinds[0] == ("model", "small", "ok") and kinds[-1] == ("model", "small", "ok")
    assert sorted(kinds[1:3]) == [("tool", "multiply", "ok"), ("tool", "weather", "ok")]
    assert [s.public() for s in seen] == out["steps"]
    assert out["steps"][0]["usage"]["prompt_tokens"] == 10


async def test_one_turns_tool_calls_run_together_in_order(toolbox: ToolBox) -> None:
    model = ScriptedModel(
        asks(("nap", {"seconds": 0.6}), ("nap", {"seconds": 0.1}), ("nap", {"seconds": 0.6})),
        answers("rested"),
    )
    t0 = time.monotonic()
    _, seen = await run(model, toolbox)
    assert time.monotonic() - t0 < 1.1  # together ~0.6 s; one after another 1.3 s
    tools = model.requests[1]["messages"][3:]
    assert [json.loads(m["content"])["slept"] for m in tools] == [0.6, 0.1, 0.6]
    assert [m["tool_call_id"] for m in tools] == ["call_nap_0", "call_nap_1", "call_nap_2"]
    assert seen[1].arguments == {"seconds": 0.1}  # the quickest ended, and was recorded, first


async def test_a_tool_outside_the_allowlist_is_refused_and_the_run_goes_on(
    toolbox: ToolBox,
) -> None:
    model = ScriptedModel(asks(("secret", {"a": 1, "b": 2})), answers("I may not."))
    out, _ = await run(model, toolbox)
    refusal = json.loads(model.requests[1]["messages"][-1]["content"])
    assert refusal == {
        "error": "tool 'secret' is not allowed for this agent; it may call: "
        "weather, multiply, nap, wipe"
    }
    step = out["steps"][1]
    assert (step["name"], step["outcome"], step["error"]) == ("secret", "refused", refusal["error"])
    assert out["choices"][0]["message"]["content"] == "I may not."


async def test_a_tool_beyond_the_callers_scopes_is_refused(toolbox: ToolBox) -> None:
    model = ScriptedModel(asks(("wipe", {"a": 1, "b": 2})), answers("no"))
    out, _ = await run(model, toolbox, scopes=("submit", "read"))
    assert out["steps"][1]["outcome"] == "refused"
    assert (
        "needs the 'admin' scope"
        in json.loads(model.requests[1]["messages"][-1]["content"])["error"]
    )
    admin = ScriptedModel(asks(("wipe", {"a": 1, "b": 2})), answers("done"))
    out, _ = await run(admin, toolbox, scopes=("admin",))
    assert out["steps"][1]["outcome"] == "ok" and out["steps"][1]["result"] == 2


async def test_bad_arguments_go_back_to_the_model_which_may_correct_them(
    toolbox: ToolBox,
) -> None:
    model = ScriptedModel(
        asks(("multiply", {"a": "six", "b": 7})),
        asks(("multiply", {"a": 6, "b": 7})),
        answers("42"),
    )
    out, _ = await run(model, toolbox)
    error = json.loads(model.requests[1]["messages"][-1]["content"])["error"]
    assert "at 'a': 'six' is not of type 'integer'" in error
    assert model.requests[2]["messages"][-1]["content"] == "42"
    assert [s["outcome"] for s in out["steps"] if s["type"] == "tool"] == ["error", "ok"]


async def test_the_step_limit_ends_a_run_that_never_answers(toolbox: ToolBox) -> None:
    model = ScriptedModel(asks(("multiply", {"a": 2, "b": 2})))
    with pytest.raises(AgentStepLimit) as info:
        await run(model, toolbox, agent=AGENT.model_copy(update={"max_steps": 3}))
    err = info.value
    assert "reached its step limit (max_steps=3)" in err.message and "(multiply)" in err.message
    assert isinstance(err, ModelError) and not err.retryable
    assert len(model.requests) == 3
    kinds = [s["type"] for s in err.steps]
    assert kinds == ["model", "tool", "model", "tool", "model"]  # the last turn's calls not run


async def test_the_deadline_ends_a_slow_model_call(toolbox: ToolBox) -> None:
    model = ScriptedModel(answers("late"), delay=2.0)
    t0 = time.monotonic()
    with pytest.raises(AgentDeadline) as info:
        await run(model, toolbox, deadline_s=0.3)
    assert time.monotonic() - t0 < 1.0
    err = info.value
    assert isinstance(err, ModelTimeout) and not err.retryable
    assert "ran past its deadline of 0.3 s" in err.message
    assert [(s["type"], s["outcome"]) for s in err.steps] == [("model", "timeout")]


async def test_the_deadline_cuts_a_slow_tool_short(toolbox: ToolBox) -> None:
    model = ScriptedModel(asks(("nap", {"seconds": 5})), answers("never"))
    agent = AGENT.model_copy(update={"deadline_s": 0.4})
    t0 = time.monotonic()
    with pytest.raises(AgentDeadline) as info:
        await run(model, toolbox, agent=agent)
    assert time.monotonic() - t0 < 1.5
    assert [(s["type"], s["outcome"]) for s in info.value.steps] == [
        ("model", "ok"),
        ("tool", "timeout"),
    ]
    assert len(model.requests) == 1


async def test_a_failed_model_call_ends_the_run_as_it_failed(toolbox: ToolBox) -> None:
    model = ScriptedModel(asks(("multiply", {"a": 1, "b": 1})), ModelError("upstream 500"))
    seen: list[Step] = []
    with pytest.raises(ModelError, match="upstream 500") as info:
        await _run_agent(
            AGENT, USER, call_model=model, toolbox=toolbox, scopes=["submit"], on_step=seen.append
        )
    assert info.value.retryable and len(model.requests) == 2
    assert [(s.type, s.outcome) for s in seen] == [
        ("model", "ok"),
        ("tool", "ok"),
        ("model", "error"),
    ]
    assert seen[-1].error == "upstream 500"


async def test_a_malformed_answer_is_a_model_error(toolbox: ToolBox) -> None:
    bad = {"choices": [{"message": {"role": "assistant", "tool_calls": "weather"}}]}
    with pytest.raises(ModelError, match="tool_calls that are not a list") as info:
        await run(ScriptedModel(bad), toolbox)
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"messages": []}, "needs 'messages', a non-empty list"),
        ({"prompt": "hi"}, "needs 'messages'"),
        ({**USER, "tools": []}, r"brings its own tools; drop \['tools'\]"),
        ({**USER, "stream": True}, "cannot stream"),
    ],
)
async def test_a_request_an_agent_cannot_take_is_refused(
    toolbox: ToolBox, body: dict[str, Any], says: str
) -> None:
    model = ScriptedModel(answers("x"))
    with pytest.raises(InvalidRequest, match=says):
        await run(model, toolbox, body=body)
    assert model.requests == []


async def test_only_allowlisted_specs_are_offered(toolbox: ToolBox) -> None:
    model = ScriptedModel(answers("hi"))
    await run(model, toolbox, tool_specs=toolbox.specs(["secret", "weather", "multiply"]))
    assert [t["function"]["name"] for t in model.requests[0]["tools"]] == ["weather", "multiply"]


async def test_an_agent_without_tools_or_system_prompt_just_asks_its_model(
    toolbox: ToolBox,
) -> None:
    model = ScriptedModel(answers("hello"))
    plain = AgentConfig(name="plain", model="small")
    out, seen = await run(model, toolbox, agent=plain)
    assert "tools" not in model.requests[0] and model.requests[0]["messages"] == USER["messages"]
    assert out["model"] == "plain" and len(out["steps"]) == 1 and len(seen) == 1
