"""Pipelines as written in YAML, in the vocabulary of GitHub Actions (``on:``, ``needs:``).

A models file lists them under ``pipelines:``, each inline or as ``{name: …, file: path}``::

    pipelines:
      - name: reviews
        on:
          schedule: [{cron: "0 9 * * MON", timezone: Europe/Paris, catch_up: latest}]
          files: {path: ./inbox, glob: "*.jsonl", input: file}
          events: {pattern: {type: ["batch.completed"]}}
        inputs:
          file: {required: true}
        source: {jsonl: "{{inputs.file}}"}
        key: "{{item.id}}"                   # default: a hash of the item
        steps:
          - id: analyse
            model: smollm2-135m-instruct
            prompt: "Sentiment of: {{item.text}}"
          - id: negative
            needs: [analyse]
            filter: {steps: {analyse: [{prefix: "neg"}]}}
        sink:
          - jsonl: {}
          - report: summary.md.j2

A step is a model call (``model:``, on any endpoint, a ``prompt:`` or a templated ``body:``; a
chat call's ``prompt:`` may name a stored prompt instead, :mod:`genspool.pipelines.prompts`), a
``fanout:``, a ``filter:`` (an event pattern over the item), a Python ``transform:`` or an
``image:`` step. Templates see ``item`` (the source's record), ``key``, ``seq``, ``inputs``,
``run`` and ``steps.<id>`` (the output of each step the step needs, directly or not). What is
wrong is refused when the file is loaded, naming the pipeline, the path and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genspool.config import _read_yaml, section
from genspool.core.patterns import PatternError, compile_pattern
from genspool.exceptions import ConfigError
from genspool.fanout.spec import FanoutCreate
from genspool.fanout.template import placeholders
from genspool.pipelines import transforms
from genspool.pipelines.images import ImageSpec
from genspool.pipelines.prompts import StoredPrompt
from genspool.pipelines.sinks import Sink
from genspool.pipelines.sources import Source
from genspool.providers.base import CHAT

__all__ = [
    "ConfigError",
    "EventsTrigger",
    "FilesTrigger",
    "InputSpec",
    "ModelCall",
    "On",
    "Pipeline",
    "Schedule",
    "Step",
    "fanout_template",
    "load_pipelines",
    "render_fanout",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_STEP_KINDS = ("model", "fanout", "filter", "transform", "image")
#: What a template may start with.
_ROOTS = frozenset({"item", "key", "seq", "inputs", "run", "steps"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Strict):
    cron: str = Field(
        description="Five fields (minute hour day month weekday), or six with seconds last."
    )
    timezone: str = Field("UTC", description="An IANA zone, e.g. Europe/Paris.")
    catch_up: Literal["none", "latest", "all"] = Field(
        "latest",
        description="Ticks passed while no process ran: none (recorded missed), latest (the"
        " latest one runs, the others recorded skipped) or all (each runs).",
    )
    misfire_grace_s: float = Field(
        60.0, gt=0, description="How late a tick may start and still count as on time."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value) or len(value.split()) not in (5, 6):
            raise ValueError(f"{value!r} is not a cron expression (5 fields, or 6 with seconds)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (an IANA name)") from None
        return value

    def ticks(self, after: float, until: float) -> list[float]:
        """The instants in ``(after, until]``, epoch seconds."""
        start = datetime.fromtimestamp(after, ZoneInfo(self.timezone))
        it = croniter(self.cron, start, second_at_beginning=False)
        out: list[float] = []
        while (t := float(it.get_next(float))) <= until:
            out.append(t)
            if len(out) > 100_000:  # a every-second cron asked about a long gap
                break
        return out


class FilesTrigger(_Strict):
    path: str = Field(description="The watched directory.")
    glob: str = Field("*", description="Which files in it start a run.")
    input: str = Field("file", description="The input that receives the file's path.")
    settle_s: float = Field(
        2.0, ge=0, description="How long a file's size and time must stay still before it runs."
    )
    poll: bool = Field(False, description="Poll the directory (network mounts send no events).")
    interval_s: float = Field(1.0, gt=0, description="How often it is polled.")


class EventsTrigger(_Strict):
    pattern: dict[str, Any] = Field(
        description="An event pattern over {type, detail} of job and batch events,"
        " e.g. {type: [batch.completed]}."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            compile_pattern(value)
        except PatternError as exc:
            raise ValueError(str(exc)) from None
        return value


class On(_Strict):
    http: bool = Field(True, description="Whether POST /v1/pipelines/{name}/runs starts it.")
    schedule: list[Schedule] = Field(default_factory=list)
    files: FilesTrigger | None = None
    events: EventsTrigger | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class InputSpec(_Strict):
    default: Any = None
    required: bool = False
    description: str | None = None


class ModelCall(_Strict):
    """A model step: one job per item, at the pipeline's priority."""

    model: str
    endpoint: str = Field(CHAT, description="Any endpoint the model serves.")
    prompt: str | StoredPrompt | None = Field(
        None,
        description="The user message of a chat call, or a stored prompt: {id, version? or"
        " label?, variables}.",
    )
    system: str | None = Field(None, description="The system message of a chat call.")
    body: dict[str, Any] | None = Field(None, description="The whole request body, templated.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    output: Literal["text", "json", "raw"] = Field(
        "text",
        description="What the step gives later steps: the answer's text, that text parsed as"
        " JSON, or the whole result body.",
    )
    max_attempts: int | None = Field(None, ge=1, le=100)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        """A mapping is a stored prompt: its own errors, not those of a string."""
        if not isinstance(value, dict):
            return value
        try:
            return StoredPrompt.model_validate(value)
        except ValidationError as exc:
            raise ValueError(_short(exc)) from None

    @model_validator(mode="after")
    def _stored_prompt(self) -> ModelCall:
        if not isinstance(self.prompt, StoredPrompt):
            return self
        if self.endpoint != CHAT:
            raise ValueError(f"prompt: a stored prompt makes the messages of a {CHAT} call")
        if self.body is not None or self.system is not None:
            raise ValueError("prompt: a stored prompt brings its own messages (no body, system)")
        return self

    def template(self) -> dict[str, Any]:
        """The request body, before templating. With a stored prompt, its ``variables`` stand
        under ``prompt`` (templated with the rest; the messages are made from them later)."""
        if self.body is not None:
            return {**self.body, "model": self.model}
        body: dict[str, Any] = {"model": self.model}
        if isinstance(self.prompt, StoredPrompt):
            body["prompt"] = self.prompt.variables
        else:
            messages = [{"role": "system", "content": self.system}] if self.system else []
            messages.append({"role": "user", "content": self.prompt or ""})
            body["messages"] = messages
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body


class _FanoutStep(_Strict):
    fanout: FanoutCreate


class _ImageStep(_Strict):
    image: ImageSpec


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    kind: str  # one of _STEP_KINDS
    #: The steps it needs, directly (a step may read ``steps.<id>`` of these and of theirs).
    needs: tuple[str, ...]
    call: ModelCall | None = None
    fanout: FanoutCreate | None = None
    pattern: dict[str, Any] | None = None
    transform: str | None = None
    image: ImageSpec | None = None


class _PipelineDoc(_Strict):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    tenant: str = Field("default", description="Who owns the runs a trigger starts.")
    on: On = Field(default_factory=On)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    source: Source
    key: str | None = Field(None, description="The item's key, templated; default: its hash.")
    steps: list[dict[str, Any]] = Field(min_length=1)
    sink: list[Sink] = Field(default_factory=list)
    priority: int = Field(-5, ge=-100, le=100, description="The priority of the run's jobs.")
    concurrency: int = Field(64, ge=1, le=4096, description="Items in flight at once.")

    @field_validator("sink", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    source: Source
    steps: tuple[Step, ...]  # in an order where each step comes after those it needs
    sink: tuple[Sink, ...] = ()
    on: On = field(default_factory=On)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    key: str | None = None
    tenant: str = "default"
    description: str | None = None
    priority: int = -5
    concurrency: int = 64
    #: Where relative paths (sources, sinks, report templates) are resolved.
    base: Path = field(default_factory=Path.cwd)

    def resolve_inputs(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` with defaults filled; a ValueError names an unknown or missing input."""
        if unknown := sorted(set(given) - set(self.inputs)):
            known = ", ".join(sorted(self.inputs)) or "none"
            raise ValueError(f"inputs: unknown {', '.join(unknown)} (this pipeline takes {known})")
        out = {}
        for name, spec in self.inputs.items():
            if name in given:
                out[name] = given[name]
            elif spec.required:
                raise ValueError(f"inputs.{name}: required")
            else:
                out[name] = spec.default
        return out

    def stored_prompts(self) -> dict[str, StoredPrompt]:
        """The stored prompt of each model step that names one, by step id."""
        return {
            s.id: s.call.prompt
            for s in self.steps
            if s.call is not None and isinstance(s.call.prompt, StoredPrompt)
        }

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/pipelines`` shows."""
        return {
            "object": "pipeline",
            "name": self.name,
            "description": self.description,
            "on": self.on.model_dump(exclude_none=True),
            "inputs": {k: v.model_dump(exclude_none=True) for k, v in self.inputs.items()},
            "steps": [{"id": s.id, "kind": s.kind, "needs": list(s.needs)} for s in self.steps],
            "sinks": [s.kind for s in self.sink],
        }


def fanout_template(spec: FanoutCreate) -> dict[str, Any]:
    """The parts of a fan-out step an item fills: its branches' bodies and a map's text (a
    map's and a reduce's bodies keep their own ``{{chunk}}``, ``{{item}}``, ``{{outputs}}``)."""
    out: dict[str, Any] = {"branches": [b.body for b in spec.branches or ()]}
    if spec.map is not None and spec.map.text is not None:
        out["text"] = spec.map.text
    return out


def render_fanout(spec: FanoutCreate, filled: dict[str, Any]) -> FanoutCreate:
    """``spec`` with what :func:`fanout_template` gave, once rendered, put back."""
    changes: dict[str, Any] = {}
    if spec.branches:
        changes["branches"] = [
            b.model_copy(update={"body": body})
            for b, body in zip(spec.branches, filled["branches"], strict=True)
        ]
    if spec.map is not None and "text" in filled:
        changes["map"] = spec.map.model_copy(update={"text": str(filled["text"])})
    return spec.model_copy(update=changes)


def load_pipelines(entries: list[Any], source: str, base: Path) -> dict[str, Pipeline]:
    """The ``pipelines:`` of a models file, by name, every one checked."""
    out: dict[str, Pipeline] = {}
    for i, entry in enumerate(entries):
        where, src, home = f"pipelines[{i}]", source, base
        if isinstance(entry, dict) and set(entry) == {"name", "file"}:
            path = (base / str(entry["file"])).resolve()
            raw = _read_yaml(path, "pipeline file")
            if not isinstance(raw, dict):
                raise ConfigError(f"pipeline file {path} must be a mapping")
            entry = {"name": entry["name"], **{k: v for k, v in raw.items() if k != "name"}}
            where, src, home = "pipeline", f"pipeline file {path}", path.parent
        if isinstance(entry, dict) and True in entry:  # YAML 1.1 reads a bare ``on`` as true
            entry = {("on" if k is True else k): v for k, v in entry.items()}
        doc = section(_PipelineDoc, entry, where, src)
        if doc.name in out:
            raise ConfigError(f"{source}: pipeline {doc.name!r} is declared twice")
        try:
            out[doc.name] = _pipeline(doc, home)
        except ValueError as exc:
            raise ConfigError(f"{src}, {where} ({doc.name}): {exc}") from None
    return out


def _pipeline(doc: _PipelineDoc, base: Path) -> Pipeline:
    steps = [_step(raw, f"steps[{i}]") for i, raw in enumerate(doc.steps)]
    ordered = _ordered(steps)
    upstream = _upstream(ordered)
    for index, step in enumerate(steps):
        _check_uses(step, upstream[step.id], set(doc.inputs), f"steps[{index}] ({step.id})")
    if doc.key is not None:
        _check_uses_text(doc.key, set(), set(doc.inputs), "key")
    for index, step in enumerate(steps):
        if step.transform is not None:  # imported now: a typo fails at start-up, not per item
            try:
                transforms.load(step.transform, base)
            except ConfigError as exc:
                raise ValueError(f"steps[{index}] ({step.id}): {exc}") from None
    if doc.on.files is not None and doc.on.files.input not in doc.inputs:
        raise ValueError(
            f"on.files.input: {doc.on.files.input!r} is not one of the pipeline's inputs"
        )
    return Pipeline(
        name=doc.name, source=doc.source, steps=tuple(ordered), sink=tuple(doc.sink), on=doc.on,
        inputs=doc.inputs, key=doc.key, tenant=doc.tenant, description=doc.description,
        priority=doc.priority, concurrency=doc.concurrency, base=base,
    )  # fmt: skip


def _step(raw: dict[str, Any], where: str) -> Step:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a step is a mapping")
    step_id, needs = raw.get("id"), raw.get("needs", [])
    if not isinstance(step_id, str) or not re.fullmatch(_NAME, step_id):
        raise ValueError(f"{where}.id: give each step an id of letters, digits, _ . -")
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise ValueError(f"{where}.needs: a list of step ids")
    kinds = [k for k in _STEP_KINDS if k in raw]
    if len(kinds) != 1:
        raise ValueError(
            f"{where} ({step_id}): give exactly one of {', '.join(_STEP_KINDS)};"
            f" got {', '.join(kinds) or 'none'}"
        )
    rest = {k: v for k, v in raw.items() if k not in ("id", "needs")}
    kind = kinds[0]
    models: dict[str, type[BaseModel]] = {
        "model": ModelCall, "fanout": _FanoutStep, "filter": transforms.FilterStep,
        "transform": transforms.TransformStep, "image": _ImageStep,
    }  # fmt: skip
    try:
        spec: Any = models[kind].model_validate(rest)
    except Exception as exc:
        raise ValueError(f"{where} ({step_id}): {_short(exc)}") from None
    return Step(
        id=step_id, kind=kind, needs=tuple(needs),
        call=spec if kind == "model" else None,
        fanout=spec.fanout if kind == "fanout" else None,
        pattern=spec.filter if kind == "filter" else None,
        transform=spec.transform if kind == "transform" else None,
        image=spec.image if kind == "image" else None,
    )  # fmt: skip


def _short(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        why = first["msg"].removeprefix("Value error, ")
        return f"{loc}: {why}" if loc else why  # a check of the whole step has no loc
    return str(exc)


def _ordered(steps: list[Step]) -> list[Step]:
    """The steps, each after those it needs; an unknown need or a cycle is an error."""
    by_id: dict[str, Step] = {}
    for s in steps:
        if s.id in by_id:
            raise ValueError(f"steps: the id {s.id!r} is used twice")
        by_id[s.id] = s
    for s in steps:
        for need in s.needs:
            if need not in by_id:
                raise ValueError(f"steps ({s.id}).needs: no step {need!r}")
    out: list[Step] = []
    state: dict[str, int] = {}

    def visit(s: Step, path: list[str]) -> None:
        if state.get(s.id) == 2:
            return
        if state.get(s.id) == 1:
            raise ValueError(f"steps: a cycle of needs: {' -> '.join([*path, s.id])}")
        state[s.id] = 1
        for need in s.needs:
            visit(by_id[need], [*path, s.id])
        state[s.id] = 2
        out.append(s)

    for s in steps:
        visit(s, [])
    return out


def _upstream(ordered: list[Step]) -> dict[str, set[str]]:
    """Every step each step needs, directly or through others."""
    up: dict[str, set[str]] = {}
    for s in ordered:
        up[s.id] = set(s.needs).union(*(up[n] for n in s.needs))
    return up


def _check_uses(step: Step, upstream: set[str], inputs: set[str], where: str) -> None:
    if step.call is not None:
        template: Any = step.call.template()
    elif step.fanout is not None:
        template = fanout_template(step.fanout)
    elif step.image is not None:
        template = step.image.model_dump(mode="json")
    else:
        return
    for path in placeholders(template):
        _check_path(path, upstream, inputs, where)


def _check_uses_text(text: str, upstream: set[str], inputs: set[str], where: str) -> None:
    for path in placeholders(text):
        _check_path(path, upstream, inputs, where)


def _check_path(path: str, upstream: set[str], inputs: set[str], where: str) -> None:
    root, _, rest = path.partition(".")
    if root not in _ROOTS:
        raise ValueError(
            f"{where}: {{{{{path}}}}} names nothing; a template may use {', '.join(sorted(_ROOTS))}"
        )
    head = rest.partition(".")[0]
    if root == "steps" and head not in upstream:
        raise ValueError(
            f"{where}: {{{{{path}}}}} reads step {head!r}, which this step does not need"
            " (add it to needs)"
        )
    if root == "inputs" and head not in inputs:
        raise ValueError(f"{where}: {{{{{path}}}}} reads an input the pipeline does not declare")
