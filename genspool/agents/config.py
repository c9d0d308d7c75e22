"""The ``tools:`` and ``agents:`` sections: what a tool is, and what an agent may do with them.

A tool is an HTTP endpoint or a Python entry point, with the JSON Schema of its arguments, its
own timeout, rate limit and the API-key scope a caller needs to have it run::

    tools:
      - name: weather
        description: The weather in a city now.
        parameters: {type: object, properties: {city: {type: string}}, required: [city]}
        http: {url: "https://weather.internal/now", method: GET}
        timeout_s: 5
        rpm: 60
      - name: add
        parameters: {type: object, properties: {a: {type: number}, b: {type: number}}}
        entry_point: mypackage.tools:add
        scope: read
    agents:
      - name: assistant             # served as a model: clients ask for "assistant"
        model: smollm2-135m-instruct
        tools: [weather, add]
        max_steps: 8
        deadline_s: 120
        system: You answer with the help of tools.

Everything here is checked when the file is read, so a typo fails at start-up and not at the
first call: a tool's ``parameters`` must be a valid JSON Schema (Draft 2020-12) of an object,
and an ``entry_point`` must import and name a callable (the module is imported then).
:func:`check_agents` checks the names across sections.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from genspool.config import ModelConfig, ModelsFile, section
from genspool.exceptions import ConfigError

__all__ = [
    "AgentConfig",
    "HttpToolConfig",
    "ToolConfig",
    "agent_models",
    "check_agents",
    "resolve_entry_point",
]

#: OpenAI's rule for a function name; a tool's name is sent to the model as one.
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
Scope = Literal["submit", "read", "admin"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpToolConfig(_Section):
    url: str = Field(pattern=r"^https?://", description="Where the arguments are sent.")
    method: Literal["POST", "GET"] = Field(
        "POST", description="POST: the arguments as a JSON body; GET: as the query string."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every call.")


class ToolConfig(_Section):
    name: str = Field(pattern=TOOL_NAME, description="The function name the model calls.")
    description: str = Field("", description="What the tool does, for the model.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="The JSON Schema (Draft 2020-12) of the arguments, an object.",
    )
    http: HttpToolConfig | None = None
    entry_point: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="package.module:function, called with the arguments as keyword arguments.",
    )
    timeout_s: float = Field(10.0, gt=0, description="Bounds one call, rate-limit wait included.")
    rpm: int | None = Field(None, gt=0, description="Calls per minute, across processes.")
    scope: Scope = Field("submit", description="The scope the caller's API key must hold.")

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise ValueError(
                f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
            ) from exc
        # Arguments arrive as a JSON object (OpenAI's rule) and become keyword arguments.
        if schema.get("type") != "object":
            raise ValueError("must describe an object: give it 'type: object'")
        return schema

    @field_validator("entry_point")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_entry_point(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ToolConfig:
        if (self.http is None) == (self.entry_point is None):
            raise ValueError(f"tool {self.name!r}: give exactly one of 'http' or 'entry_point'")
        return self

    def openai_spec(self) -> dict[str, Any]:
        """The tool as an entry of a chat request's ``tools`` list."""
        function = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }
        return {"type": "function", "function": function}


class AgentConfig(_Section):
    name: str = Field(min_length=1, description="The model id clients ask for to run it.")
    model: str = Field(min_length=1, description="The served model the agent drives.")
    tools: list[str] = Field(default_factory=list, description="The tools it may call.")
    max_steps: int = Field(8, ge=1, description="Model calls at most, the answer included.")
    deadline_s: float = Field(120.0, gt=0, description="Bounds a whole run.")
    system: str | None = Field(None, description="A system prompt put before the caller's.")

    @field_validator("tools")
    @classmethod
    def _distinct(cls, tools: list[str]) -> list[str]:
        if dupes := sorted({t for t in tools if tools.count(t) > 1}):
            raise ValueError(f"lists {dupes} more than once")
        return tools


def resolve_entry_point(spec: str) -> Callable[..., Any]:
    """``package.module:function`` (or ``:Class.method``) → the callable; ValueError if not."""
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"entry point {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"entry point {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"entry point {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def check_agents(
    agents: Iterable[AgentConfig], tools: Iterable[ToolConfig], model_names: Collection[str]
) -> None:
    """Names agree across sections: each agent drives a served model and calls declared
    tools, no name is declared twice, and no agent takes the name of a model (both are asked
    for by the same ``model`` field of a request)."""
    agents, tools = list(agents), list(tools)
    _unique("tool", [t.name for t in tools])
    _unique("agent", [a.name for a in agents])
    known = {t.name for t in tools}
    for agent in agents:
        if agent.name in model_names:
            raise ConfigError(f"agent {agent.name!r} has the name of a model; rename one")
        if agent.model not in model_names:
            served = ", ".join(sorted(model_names)) or "none"
            raise ConfigError(
                f"agent {agent.name!r} drives unknown model {agent.model!r} (served: {served})"
            )
        if unknown := [t for t in agent.tools if t not in known]:
            declared = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"agent {agent.name!r} names unknown tool(s) {unknown} (declared: {declared})"
            )


def _unique(kind: str, names: list[str]) -> None:
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{kind} name(s) {dupes} declared more than once")


def agent_models(found: ModelsFile) -> list[ModelConfig]:
    """The models file's agents as models of the ``agent`` provider, each carrying its tools
    (:mod:`genspool.agents.provider`); the file's ``tools`` and ``agents`` checked first. An
    agent job is not retried (``max_attempts: 1``): a second attempt would run its tools again."""
    tools = [section(ToolConfig, e, f"tools[{i}]", found.source) for i, e in enumerate(found.tools)]
    agents = [
        section(AgentConfig, e, f"agents[{i}]", found.source) for i, e in enumerate(found.agents)
    ]
    by_model = {m.name: m for m in found.models}
    try:
        check_agents(agents, tools, by_model)
    except ConfigError as exc:
        raise ConfigError(f"{found.source}: {exc.message}") from exc
    by_tool = {t.name: t for t in tools}
    return [
        section(
            ModelConfig,
            {
                "name": agent.name,
                "provider": "agent",
                "endpoints": ["/v1/chat/completions"],
                "context_window": by_model[agent.model].context_window,
                "max_attempts": 1,
                "batching": {"max_batch_size": 16, "max_wait_ms": 0, "max_concurrency": 16},
                "limits": {"timeout_s": agent.deadline_s + 30},
                "options": {
                    "agent": agent.model_dump(),
                    "tools": [by_tool[t].model_dump() for t in agent.tools],
                },
            },
            f"agents[{i}]",
            found.source,
        )
        for i, agent in enumerate(agents)
    ]
