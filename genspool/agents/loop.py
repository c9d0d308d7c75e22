"""The OpenAI tool-calling loop of an agent: the model proposes calls, the tool box runs them,
their results go back to the model, until it answers or runs out of steps or time.

The loop knows nothing of queues or providers: the caller gives it ``call_model`` (one chat
completion of the agent's model; the worker submits it as a child job) and a
:class:`~genspool.agents.tools.ToolBox`. Every model call and every tool call becomes a
:class:`~genspool.agents.tools.Step`, handed to ``on_step`` as it ends and listed in the
answer's ``steps``. A tool call that fails or is refused is not an error of the run — the model
reads why and carries on; only the step limit, the deadline and a failed model call end it.
With tracing on, each tool call is an ``execute_tool`` span (:mod:`genspool.tracing`; a no-op
otherwise).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from genspool.agents.config import AgentConfig
from genspool.agents.tools import Step, ToolBox
from genspool.exceptions import InvalidRequest, ModelError, ModelTimeout
from genspool.tracing import execute_tool

__all__ = ["AgentDeadline", "AgentStepLimit", "run_agent"]

CallModel = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
OnStep = Callable[[Step], Awaitable[None] | None]
#: Request fields an agent owns: its tools replace the caller's.
_OWN_FIELDS = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")


class AgentStepLimit(ModelError):
    """The agent made ``max_steps`` model calls without an answer. Not retryable: the same
    conversation would go the same way, and its tool calls (side effects) would run again."""

    code = "agent_step_limit"

    def __init__(self, message: str, *, steps: list[dict[str, Any]]) -> None:
        super().__init__(message, retryable=False)
        self.steps = steps
        self.details = {"steps": steps}  # kept in the job's error (genspool.core.queue)


class AgentDeadline(ModelTimeout):
    """The agent's deadline passed before an answer. Not retryable, for the same reason as
    :class:`AgentStepLimit`: the tool calls made so far would run again."""

    code = "agent_deadline"

    def __init__(self, message: str, *, steps: list[dict[str, Any]]) -> None:
        super().__init__(message, retryable=False)
        self.steps = steps
        self.details = {"steps": steps}  # kept in the job's error (genspool.core.queue)


class _Run:
    """The state of one run: the conversation so far, its steps and the summed usage."""

    def __init__(self, agent: AgentConfig, deadline_s: float, on_step: OnStep | None) -> None:
        self.agent, self.on_step = agent, on_step
        self.deadline = time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        self.steps: list[Step] = []
        self.usage: dict[str, int] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def record(self, step: Step) -> None:
        self.steps.append(step)
        if self.on_step is not None and inspect.isawaitable(done := self.on_step(step)):
            await done

    def public_steps(self) -> list[dict[str, Any]]:
        return [s.public() for s in self.steps]

    def late(self) -> AgentDeadline:
        return AgentDeadline(
            f"agent {self.agent.name!r} ran past its deadline of {self.deadline_s:g} s "
            f"after {len(self.steps)} step(s) without an answer",
            steps=self.public_steps(),
        )


async def run_agent(
    agent: AgentConfig,
    body: Mapping[str, Any],
    *,
    call_model: CallModel,
    toolbox: ToolBox,
    scopes: Collection[str],
    tool_specs: list[dict[str, Any]] | None = None,
    on_step: OnStep | None = None,
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Run ``agent`` on a chat-completions request ``body``; the final ``chat.completion``
    with ``model`` the agent's name, ``usage`` summed over the model calls and ``steps``.
    ``tool_specs`` defaults to ``toolbox.specs(agent.tools)`` (only the allowlisted ones of
    any given are sent); ``deadline_s`` (e.g. what the
    job has left) defaults to the agent's own. Raises :class:`AgentStepLimit`,
    :class:`AgentDeadline`, ``call_model``'s :class:`ModelError`, or :class:`InvalidRequest`
    for a body that is not a chat request an agent can take."""
    run = _Run(agent, agent.deadline_s if deadline_s is None else deadline_s, on_step)
    request = _first_request(
        agent, body, toolbox.specs(agent.tools) if tool_specs is None else tool_specs
    )
    for n in range(1, agent.max_steps + 1):
        answer = await _call_model(run, request, call_model)
        message = answer["choices"][0]["message"]
        if not (calls := message.get("tool_calls")):
            return _final(run, answer)
        if n == agent.max_steps:  # its calls would run for a model that is not asked again
            raise _step_limit(run, calls)
        results = await _call_tools(run, calls, toolbox, scopes)
        # A new request, not the old one changed: the last was handed over as a job's body,
        # which storage keeps as given (the memory backend without a deep copy).
        request = {**request, "messages": [*request["messages"], message, *results]}
    raise AssertionError("unreachable: the last step returns or raises")


def _first_request(
    agent: AgentConfig, body: Mapping[str, Any], specs: list[dict[str, Any]]
) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("an agent needs 'messages', a non-empty list", param="messages")
    if own := [f for f in _OWN_FIELDS if f in body]:
        raise InvalidRequest(
            f"agent {agent.name!r} brings its own tools; drop {own} from the request",
            param=own[0],
        )
    if body.get("stream"):
        raise InvalidRequest(f"agent {agent.name!r} cannot stream its answer", param="stream")
    system = [{"role": "system", "content": agent.system}] if agent.system else []
    request = {**body, "model": agent.model, "messages": [*system, *messages]}
    # Only the allowlisted tools are offered, whatever specs the caller passed.
    if offered := [s for s in specs if s.get("function", {}).get("name") in agent.tools]:
        request["tools"] = offered
    return request


async def _call_model(run: _Run, request: dict[str, Any], call_model: CallModel) -> dict[str, Any]:
    """One model call, recorded as a step; the deadline bounds it."""
    if run.left() <= 0:
        raise run.late()
    step = Step("model", run.agent.model, "ok", time.time())
    t0 = time.monotonic()
    try:
        answer = await asyncio.wait_for(call_model(request), run.left())
        _check_answer(run.agent, answer)
    except TimeoutError:
        step.outcome, step.error = "timeout", "the deadline passed during the call"
        step.duration_s = time.monotonic() - t0
        await run.record(step)
        raise run.late() from None
    except ModelError as exc:
        step.outcome, step.error = "error", exc.message
        step.duration_s = time.monotonic() - t0
        await run.record(step)
        raise
    step.duration_s, step.usage = time.monotonic() - t0, answer.get("usage")
    _add_usage(run.usage, step.usage)
    await run.record(step)
    return answer


def _check_answer(agent: AgentConfig, answer: Any) -> None:
    """A chat completion whose first choice has a message with well-formed tool calls."""
    try:
        message = answer["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        ok = isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
    except (KeyError, IndexError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ModelError(
            f"model {agent.model!r} answered agent {agent.name!r} without a message in "
            "choices[0] (or with tool_calls that are not a list of objects)",
            retryable=False,
        )


async def _call_tools(
    run: _Run, calls: list[dict[str, Any]], toolbox: ToolBox, scopes: Collection[str]
) -> list[dict[str, Any]]:
    """Run one turn's tool calls concurrently; their ``tool`` messages, in the calls' order."""

    async def one(i: int, call: dict[str, Any]) -> dict[str, Any]:
        function = call.get("function") or {}
        call_id = str(call.get("id") or f"call_{len(run.steps)}_{i}")
        name = str(function.get("name", ""))
        tool = toolbox.tools.get(name)
        # A span when tracing is on (genspool.tracing), a shared no-op otherwise.
        with execute_tool(name, call_id, tool.description if tool is not None else "") as span:
            step = await toolbox.call(
                name,
                _text(function.get("arguments", "")),
                allowed=run.agent.tools,
                scopes=scopes,
                call_id=call_id,
                time_left=run.left(),
            )
            span.ended(step.outcome, step.arguments, step.result)
        await run.record(step)
        return {"role": "tool", "tool_call_id": call_id, "content": _content(step)}

    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(calls))))


def _text(arguments: Any) -> str:
    # Some servers send the arguments as an object rather than the JSON text of one.
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _content(step: Step) -> str:
    """What the model reads of a tool call: its result (text as is, else JSON) or the error."""
    if step.outcome != "ok":
        return json.dumps({"error": step.error})
    return step.result if isinstance(step.result, str) else json.dumps(step.result)


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if isinstance(usage, dict):
        for key, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value


def _step_limit(run: _Run, calls: list[dict[str, Any]]) -> AgentStepLimit:
    asked = ", ".join(str((c.get("function") or {}).get("name")) for c in calls)
    return AgentStepLimit(
        f"agent {run.agent.name!r} reached its step limit (max_steps={run.agent.max_steps}) "
        f"without an answer; its last model call asked for more tool calls ({asked})",
        steps=run.public_steps(),
    )


def _final(run: _Run, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        **answer,
        "model": run.agent.name,
        "usage": dict(run.usage),
        "steps": run.public_steps(),
    }
