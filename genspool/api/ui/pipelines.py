"""``/ui/pipelines``: the configured pipelines (triggers, inputs, steps, sinks) and their runs
with progress (items ended of those read or of the total, the rate), one run with its items,
its output and error files, Cancel; and a Run form with a field per input.

Through the service the pipelines API uses (:class:`~genspool.pipelines.service.Pipelines`):
runs are the tenant's own (another tenant's run is a 404), starting one needs ``submit`` and is
charged against the key's rate limit as ``POST /v1/pipelines/{name}/runs`` is. An input's value
is read as JSON when it parses (``3``, ``true``, ``["a"]``), else as text, as ``genspool
pipeline run -i`` reads it; an empty field leaves the input to its default.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.ui.common import Progress, charge, cursor, go_to, need
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.keys import Scope
from genspool.core.pipeline import ItemStatus, PipelineRun
from genspool.exceptions import InvalidRequest
from genspool.pipelines.service import Pipelines

__all__ = ["ITEMS", "PAGE", "parse_inputs", "progress_of", "router"]

router = APIRouter(include_in_schema=False)

PAGE = 20
ITEMS = 50
_FIELD = "input."


def _pipelines(request: Request) -> Pipelines:
    return need(services(request).pipelines, "pipeline runs")


def progress_of(run: PipelineRun, now: float) -> Progress:
    """Items done, failed and skipped, of the total once the source is read whole (of those
    read until then)."""
    total = run.total if run.total is not None else (run.read or None)
    return Progress.of(run.succeeded, run.failed, total, started=run.started_at,
                       ended_at=run.ended_at, now=now, skipped=run.skipped)  # fmt: skip


def parse_inputs(form: dict[str, str]) -> dict[str, Any]:
    """The inputs of a Run form: each ``input.<name>`` field read as JSON when it parses."""
    inputs: dict[str, Any] = {}
    for field, text in form.items():
        if not field.startswith(_FIELD) or not text.strip():
            continue
        try:
            inputs[field.removeprefix(_FIELD)] = orjson.loads(text)
        except orjson.JSONDecodeError:
            inputs[field.removeprefix(_FIELD)] = text
    return inputs


async def _runs(
    request: Request, caller: Caller, name: str | None, after: str | None
) -> dict[str, Any]:
    found = await _pipelines(request).page(caller.sees, name, after=cursor(after), limit=PAGE)
    now = services(request).queue.clock()
    return {
        "runs": found.data,
        "progress": {r.id: progress_of(r, now) for r in found.data},
        "after": after,
        "next_after": found.data[-1].id if found.has_more and found.data else None,
        "now": now,
    }


@router.get("/pipelines")
@ui_requires(Scope.READ)
async def pipelines(request: Request, caller: UiCaller, after: str | None = None) -> Response:
    configured = sorted(_pipelines(request).pipelines.values(), key=lambda p: p.name)
    runs = await _runs(request, caller, None, after)
    return await render(request, "pipelines.html", caller, pipelines=configured, **runs)


@router.get("/pipelines/{name}")
@ui_requires(Scope.READ)
async def pipeline(
    request: Request, caller: UiCaller, name: str, after: str | None = None
) -> Response:
    found = _pipelines(request).pipeline(name)
    runs = await _runs(request, caller, name, after)
    return await render(request, "pipeline.html", caller, pipeline=found, **runs)


@router.post("/pipelines/{name}/runs")
@ui_requires(Scope.SUBMIT)
async def start(request: Request, caller: UiCaller, name: str) -> Response:
    pipes = _pipelines(request)
    pipes.pipeline(name)  # 404 before anything is charged
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    await charge(request, caller)
    run, _ = await pipes.start(
        name, tenant=caller.tenant, inputs=parse_inputs(form),
        force=form.get("force") == "on", scopes=tuple(sorted(caller.scopes)),
    )  # fmt: skip
    return go_to(request, f"/pipelines/{name}/runs/{run.id}")


def _status(text: str | None) -> ItemStatus | None:
    if not text:
        return None
    try:
        return ItemStatus(text)
    except ValueError:
        known = ", ".join(s.value for s in ItemStatus)
        raise InvalidRequest(f"status: one of {known}", param="status") from None


async def _run_page(
    request: Request, caller: Caller, run: PipelineRun, template: str, **more: Any
) -> Response:
    now = services(request).queue.clock()
    return await render(request, template, caller, run=run, p=progress_of(run, now), now=now,
                        **more)  # fmt: skip


async def _items(
    request: Request, run: PipelineRun, after: int, status: str | None
) -> dict[str, Any]:
    wanted = _status(status)
    found = await _pipelines(request).items(
        run, after=after, limit=ITEMS, status=None if wanted is None else wanted.value
    )
    return {
        "items": found,
        "item_status": "" if wanted is None else wanted.value,
        "item_after": after,
        "item_next": found[-1].seq if len(found) == ITEMS else None,
        "item_statuses": [s.value for s in ItemStatus],
    }


@router.get("/pipelines/{name}/runs/{run_id}")
@ui_requires(Scope.READ)
async def run_page(
    request: Request,
    caller: UiCaller,
    name: str,
    run_id: str,
    after: int = 0,
    status: str | None = None,
) -> Response:
    run = await _pipelines(request).get(run_id, caller.sees, name)
    items = await _items(request, run, max(after, 0), status)
    return await _run_page(request, caller, run, "pipeline_run.html", **items)


@router.get("/pipelines/{name}/runs/{run_id}/progress")
@ui_requires(Scope.READ)
async def run_progress(request: Request, caller: UiCaller, name: str, run_id: str) -> Response:
    run = await _pipelines(request).get(run_id, caller.sees, name)
    return await _run_page(request, caller, run, "_run_progress.html")


@router.get("/pipelines/{name}/runs/{run_id}/items")
@ui_requires(Scope.READ)
async def run_items(
    request: Request,
    caller: UiCaller,
    name: str,
    run_id: str,
    after: int = 0,
    status: str | None = None,
) -> Response:
    run = await _pipelines(request).get(run_id, caller.sees, name)
    items = await _items(request, run, max(after, 0), status)
    return await _run_page(request, caller, run, "_run_items.html", **items)


@router.post("/pipelines/{name}/runs/{run_id}/cancel")
@ui_requires(Scope.SUBMIT)
async def cancel(request: Request, caller: UiCaller, name: str, run_id: str) -> Response:
    run = await _pipelines(request).cancel(run_id, caller.sees, name)
    return await _run_page(request, caller, run, "_run_progress.html")
