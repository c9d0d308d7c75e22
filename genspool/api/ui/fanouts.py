"""``/ui/fanouts``: fan-outs (the parent jobs of ``POST /v1/fanouts``), newest first, and one
fan-out with its branches as they land; cancel.

A fan-out is a job of the ``genspool-fanout`` model, so the list is the jobs view's keyset
listing of that model (filters in the URL). Its branches are child jobs: once the parent has
ended its result (or its error) lists every branch with its job id; while it runs they are
found among the newest jobs of the branches' models in its tenant, those that name it as their
parent, reading at most :data:`SCAN_LIMIT` jobs of each model. The branch table polls itself
every second until the parent ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.deps import Services, services
from genspool.api.ui.jobs import SINCE_CHOICES, page_of, parse_filters
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.job import TERMINAL, Job, JobStatus
from genspool.core.keys import Scope
from genspool.core.models import BRANCH, PARENT
from genspool.core.roles import JobFilter
from genspool.exceptions import NotFound
from genspool.fanout.aggregate import text_of
from genspool.fanout.spec import FANOUT_MODEL, Plan

__all__ = ["SCAN_LIMIT", "BranchRow", "branch_rows", "router"]

router = APIRouter(include_in_schema=False)

#: Jobs of one model read at most while looking for a running fan-out's branches.
SCAN_LIMIT = 2000
_PAGE = 200
#: Branch rows shown at most (a map's pieces may be thousands).
MAX_ROWS = 500
_EXCERPT = 400


@dataclass(frozen=True, slots=True)
class BranchRow:
    """A branch as its row shows it: its plan, and its job once there is one."""

    name: str
    model: str
    status: str
    job_id: str | None = None
    output: str | None = None
    error: str | None = None


def _plan(job: Job) -> Plan | None:
    try:
        return Plan.model_validate(job.body)
    except ValidationError:
        return None


def _models(plan: Plan | None) -> list[str]:
    """The models a fan-out's children may be jobs of."""
    if plan is None:
        return []
    bodies = [b.body for b in plan.branches]
    bodies += [part.body for part in (plan.map, plan.reduce) if part is not None]
    return sorted({str(body.get("model", "")) for body in bodies} - {""})


def _recorded(parent: Job) -> list[dict[str, Any]] | None:
    """The branches an ended parent lists: in its result, or in its error when it failed."""
    body = (parent.result or {}).get("body")
    found = body.get("branches") if isinstance(body, dict) else None
    if found is None and parent.error:
        found = parent.error.get("branches")
    return [b for b in found if isinstance(b, dict)] if isinstance(found, list) else None


async def _children(svc: Services, parent: Job, plan: Plan | None) -> dict[str, Job]:
    """The parent's child jobs made so far, by branch name (jobs newer than the parent, of
    the branches' models, in its tenant)."""
    found: dict[str, Job] = {}
    for model in _models(plan):
        before: str | None = None
        for _ in range(SCAN_LIMIT // _PAGE):
            page = await svc.queue.list_jobs(JobFilter(None, model, parent.tenant, before, _PAGE))
            for job in page:
                if job.metadata.get(PARENT) == parent.id:
                    found[str(job.metadata.get(BRANCH, job.id))] = job
            if len(page) < _PAGE or page[-1].id <= parent.id:
                break
            before = page[-1].id
    return found


def _from_job(name: str, model: str, job: Job) -> BranchRow:
    output = text_of((job.result or {}).get("body")) if job.status is JobStatus.SUCCEEDED else None
    error = job.error.get("message") if job.error else None
    return BranchRow(name, model, job.status.value, job.id, _cut(output), _cut(error))


def _from_record(record: dict[str, Any], model: str) -> BranchRow:
    error = record.get("error")
    return BranchRow(
        name=str(record.get("name", "")),
        model=model,
        status=str(record.get("status", "")),
        job_id=record.get("job_id"),
        output=_cut(text_of(record.get("result"))),
        error=_cut(error.get("message") if isinstance(error, dict) else None),
    )


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


async def branch_rows(svc: Services, parent: Job) -> list[BranchRow]:
    """Every branch of ``parent``: planned, running, or ended with its output or error."""
    plan = _plan(parent)
    planned = {b.name: str(b.body.get("model", "")) for b in plan.branches} if plan else {}
    recorded = _recorded(parent) if parent.status in TERMINAL else None
    if recorded is not None:
        return [_from_record(r, planned.get(str(r.get("name")), "")) for r in recorded][:MAX_ROWS]
    children = await _children(svc, parent, plan)
    rows = [
        _from_job(name, model, children[name])
        if name in children
        else BranchRow(name, model, "pending")
        for name, model in planned.items()
    ]
    rows += [_from_job(n, j.model, j) for n, j in sorted(children.items()) if n not in planned]
    return rows[:MAX_ROWS]


async def _parent(request: Request, caller: Caller, job_id: str) -> Job:
    job = await services(request).queue.get(job_id, caller.sees)
    if job.model != FANOUT_MODEL:
        raise NotFound(f"{job_id} is a job, not a fan-out", param="job_id")
    return job


async def _branches(request: Request, caller: Caller, parent: Job, template: str) -> Response:
    svc = services(request)
    rows = await branch_rows(svc, parent)
    plan = _plan(parent)
    return await render(
        request, template, caller, job=parent, plan=plan, rows=rows,
        terminal=parent.status in TERMINAL, now=svc.queue.clock(),
        landed=sum(1 for r in rows if r.status in {s.value for s in TERMINAL} | {"timeout"}),
    )  # fmt: skip


@router.get("/fanouts")
@ui_requires(Scope.READ)
async def fanouts(request: Request, caller: UiCaller) -> Response:
    svc = services(request)
    query = {k: v for k, v in request.query_params.items() if k != "model"}
    f = parse_filters({**query, "model": FANOUT_MODEL}, caller)
    jobs, more = await page_of(svc, f)
    return await render(
        request,
        "fanouts.html",
        caller,
        jobs=jobs,
        plans={j.id: _plan(j) for j in jobs},
        filters=f,
        next_query=f.query(after=more, model=None) if more else None,
        first_query=f.query(after=None, model=None) if f.after else None,
        statuses=[s.value for s in JobStatus],
        since_choices=SINCE_CHOICES,
        now=svc.queue.clock(),
    )


@router.get("/fanouts/{job_id}")
@ui_requires(Scope.READ)
async def fanout(request: Request, caller: UiCaller, job_id: str) -> Response:
    return await _branches(request, caller, await _parent(request, caller, job_id), "fanout.html")


@router.get("/fanouts/{job_id}/branches")
@ui_requires(Scope.READ)
async def branches(request: Request, caller: UiCaller, job_id: str) -> Response:
    parent = await _parent(request, caller, job_id)
    return await _branches(request, caller, parent, "_fanout_branches.html")


@router.post("/fanouts/{job_id}/cancel")
@ui_requires(Scope.SUBMIT)
async def cancel(request: Request, caller: UiCaller, job_id: str) -> Response:
    """Cancel the parent (its coordinator cancels the branches still running)."""
    await _parent(request, caller, job_id)
    parent = await services(request).queue.cancel(job_id, caller.sees)
    return await _branches(request, caller, parent, "_fanout_branches.html")
