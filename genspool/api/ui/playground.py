"""``/ui/playground``: run a prompt on any served model, agent or fan-out route and watch the
answer stream in; or compare models side by side on the same prompt (a fan-out, each
branch's column filled as it lands).

The prompt is written, or a registered one (:mod:`genspool.core.prompts`) is chosen, with its
label or version, and its variables filled. A route takes an event: the text as JSON, or text
that becomes the event's ``detail.prompt``; its targets run as the branches of a fan-out.
Submitting needs the ``submit`` scope and is checked and counted as ``POST /v1/jobs`` and ``POST
/v1/fanouts`` are (validation, prompt rendering, input files, admission, the key's rate limit):
the page is no way around any of them. When the page names its live stream (``X-Live-Channel``)
the job is followed there from before it exists (:func:`~genspool.api.ui.follow.hold`), so the
answer streams from its first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.bodies import check_inputs
from genspool.api.deps import Services, services
from genspool.api.routes_fanouts import fanout_job, plan_fanout
from genspool.api.routes_jobs import JobCreate, build_job
from genspool.api.routes_prompts import rendered
from genspool.api.ui.answers import answer_text, columns, landed_of
from genspool.api.ui.common import charge, need
from genspool.api.ui.follow import hold
from genspool.api.ui.live import live_of
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.config import INTERNAL_MODELS
from genspool.core.job import Job
from genspool.core.keys import Scope
from genspool.core.prompts import parse_ref
from genspool.exceptions import InvalidRequest, NotFound
from genspool.fanout.spec import FANOUT_MODEL, Branch, FanoutCreate

__all__ = ["Ask", "Target", "router", "targets"]

router = APIRouter(include_in_schema=False)

CHAT = "/v1/chat/completions"
DEFAULT_MAX_TOKENS, MAX_TOKENS = 128, 4096
#: Most models one compare runs.
MAX_COMPARE = 8
_GROUPS = ("models", "agents", "routes")


@dataclass(frozen=True, slots=True)
class Target:
    """What the playground can run: ``model:<name>`` (a model or an agent) or
    ``route:<name>``."""

    value: str
    label: str
    group: str


async def targets(svc: Services) -> list[Target]:
    """The served chat models and agents, then the fan-out routes."""
    found = []
    for cfg in svc.catalog:
        if cfg.name in INTERNAL_MODELS or CHAT not in svc.catalog.card(cfg.name).endpoints:
            continue
        group = "agents" if cfg.provider == "agent" else "models"
        found.append(Target(f"model:{cfg.name}", cfg.name, group))
    found += [Target(f"route:{r.name}", r.name, "routes") for r, _ in await svc.routes.routes()]
    return found


@dataclass(frozen=True, slots=True)
class Ask:
    """The playground's form, checked."""

    target: str
    text: str
    prompt: str = ""
    ref: str = ""
    variables: tuple[tuple[str, str], ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None

    @classmethod
    def of(cls, form: FormData) -> Ask:
        def field(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        variables = tuple(
            (k[4:], v) for k, v in form.multi_items() if k.startswith("var.") and isinstance(v, str)
        )
        raw = form.get("text")
        return cls(
            target=field("target"),
            text=raw if isinstance(raw, str) and raw.strip() else "",
            prompt=field("prompt"),
            ref=field("ref"),
            variables=variables,
            max_tokens=_number(field("max_tokens"), "max_tokens", DEFAULT_MAX_TOKENS),
            temperature=_temperature(field("temperature")),
        )

    def body(self, model: str) -> dict[str, Any]:
        """A chat request for ``model``: the registered prompt's messages, then the text."""
        if not self.text and not self.prompt:
            raise InvalidRequest("text: write a prompt, or choose a registered one", param="text")
        body: dict[str, Any] = {"model": model, "max_tokens": self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.prompt:
            ref = f"{self.prompt}@{self.ref}" if self.ref else self.prompt
            body["prompt"] = {"id": ref, "variables": dict(self.variables)}
        if self.text:
            body["messages"] = [{"role": "user", "content": self.text}]
        return body

    def event(self) -> dict[str, Any]:
        """A route's event: the text when it is a JSON object, else ``detail.prompt``."""
        if self.prompt:
            raise InvalidRequest(
                "prompt: a route takes an event (the text), not a registered prompt",
                param="prompt",
            )
        if not self.text:
            raise InvalidRequest("text: write the event for the route", param="text")
        try:
            parsed = orjson.loads(self.text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
        return {"source": "playground", "detail-type": "prompt", "detail": {"prompt": self.text}}


def _number(text: str, name: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_TOKENS:
        raise InvalidRequest(f"{name}: a whole number from 1 to {MAX_TOKENS}", param=name)
    return int(text)


def _temperature(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 2.0:
        raise InvalidRequest("temperature: a number from 0 to 2", param="temperature")
    return value


def _target(value: str) -> tuple[str, str]:
    kind, _, name = value.partition(":")
    if kind not in ("model", "route") or not name:
        raise InvalidRequest("target: choose a model, an agent or a route", param="target")
    if kind == "model" and name in INTERNAL_MODELS:
        raise InvalidRequest(f"target: {name!r} is genspool's own model", param="target")
    return kind, name


@router.get("/playground")
@ui_requires(Scope.READ)
async def playground(request: Request, caller: UiCaller) -> Response:
    svc = services(request)
    found = await targets(svc)
    groups = [(g, [t for t in found if t.group == g]) for g in _GROUPS]
    prompts = None
    if svc.prompts is not None:
        listed = await svc.prompts.store.prompt_list(caller.tenant, None, 100)
        prompts = [v.prompt_id for v in listed]
    return await render(
        request, "playground.html", caller, groups=[(g, ts) for g, ts in groups if ts],
        models=[t for t in found if t.group != "routes"], prompts=prompts,
        max_tokens=DEFAULT_MAX_TOKENS, max_tokens_limit=MAX_TOKENS,
    )  # fmt: skip


@router.get("/playground/prompt")
@ui_requires(Scope.READ)
async def prompt_fields(
    request: Request, caller: UiCaller, prompt: str = "", ref: str = ""
) -> Response:
    """The chosen prompt's versions and labels, and a field per variable."""
    if not prompt:
        return await render(request, "_prompt_vars.html", caller, version=None, ref="")
    registry = need(services(request).prompts, "prompts")
    version = await registry.resolve(caller.tenant, parse_ref(f"{prompt}@{ref}" if ref else prompt))
    labels = await registry.labels(caller.tenant, version.prompt_id)
    return await render(
        request, "_prompt_vars.html", caller, version=version, labels=labels, ref=ref
    )


@router.post("/playground")
@ui_requires(Scope.SUBMIT)
async def run(request: Request, caller: UiCaller) -> Response:
    """One job on a model or an agent, or a fan-out of a route's targets."""
    ask = Ask.of(await request.form())
    kind, name = _target(ask.target)
    svc = services(request)
    await charge(request, caller)
    if kind == "route":
        route, _ = await svc.routes.get(name)
        planned = route.branches(ask.event())
        branches = [Branch(name=b.name, url=b.url, body=b.body, timeout_s=b.timeout_s)
                    for b in planned]  # fmt: skip
        return await _fan_out(request, caller, branches)
    body, prompt = await rendered(svc, CHAT, ask.body(name), caller.tenant)
    await check_inputs(svc.files, CHAT, body, caller.tenant)
    spec = JobCreate(url=CHAT, body=body)
    job = build_job(svc, spec, tenant=caller.tenant, scopes=caller.scopes, prompt=prompt)
    stored, channel = await _submit(request, caller, "play", job)
    return await _answer(request, caller, stored, channel=channel)


@router.post("/playground/compare")
@ui_requires(Scope.SUBMIT)
async def compare(request: Request, caller: UiCaller) -> Response:
    """The same prompt on each ticked model, as the branches of one fan-out."""
    form = await request.form()
    ask = Ask.of(form)
    models = list(dict.fromkeys(m for m in form.getlist("models") if isinstance(m, str)))
    if not models:
        raise InvalidRequest("models: tick the models to compare", param="models")
    if len(models) > MAX_COMPARE:
        raise InvalidRequest(f"models: at most {MAX_COMPARE} at a time", param="models")
    for model in models:
        _target(f"model:{model}")
    await charge(request, caller)
    svc = services(request)
    # The registered prompt rendered once, its messages the same in every branch.
    first, _ = await rendered(svc, CHAT, ask.body(models[0]), caller.tenant)
    branches = [
        Branch(name=f"b{i}", url=CHAT, body={**first, "model": model})
        for i, model in enumerate(models)
    ]
    return await _fan_out(request, caller, branches)


async def _fan_out(request: Request, caller: Caller, branches: list[Branch]) -> Response:
    svc = services(request)
    spec = FanoutCreate(branches=branches)
    job = fanout_job(spec, await plan_fanout(svc, spec, caller), caller)
    stored, channel = await _submit(request, caller, "fan", job)
    return await _compare(request, caller, stored, channel=channel)


async def _submit(request: Request, caller: Caller, kind: str, job: Job) -> tuple[Job, str]:
    """Submit ``job``, followed by the page's live stream from before it exists; the stored
    job, and the channel of the stream that follows it ("": the page is to ask for it)."""
    queue = services(request).queue
    live = live_of(request, caller)
    with hold(queue, job.id, deltas=kind == "play") as held:
        stored = await queue.submit(job)
        adopted = live is not None and live.adopt(kind, stored, held)
    return stored, live.channel if live is not None and adopted else ""


async def _answer(request: Request, caller: Caller, job: Job, channel: str = "") -> Response:
    return await render(
        request, "_play_answer.html", caller, job=job, text=answer_text(job), channel=channel
    )


async def _compare(request: Request, caller: Caller, job: Job, channel: str = "") -> Response:
    shown = columns(job, landed_of(job))
    return await render(
        request, "_play_compare.html", caller, job=job, columns=shown, channel=channel
    )


@router.get("/playground/jobs/{job_id}")
@ui_requires(Scope.READ)
async def answer(request: Request, caller: UiCaller, job_id: str) -> Response:
    """An answer as it is now (the page polls it while its live stream is down)."""
    return await _answer(request, caller, await services(request).queue.get(job_id, caller.sees))


@router.get("/playground/fanouts/{job_id}")
@ui_requires(Scope.READ)
async def fanout(request: Request, caller: UiCaller, job_id: str) -> Response:
    job = await services(request).queue.get(job_id, caller.sees)
    if job.model != FANOUT_MODEL:
        raise NotFound(f"no fan-out {job_id!r}")
    return await _compare(request, caller, job)
