"""``/ui/dead-letters``: jobs that failed for good, newest first, each with why; replay.

Replay (one row, or the rows ticked) needs the ``submit`` scope, as ``POST
/v1/dlq/{id}/replay`` does, and asks for confirmation first (htmx ``hx-confirm``). The answer
is the replayed rows themselves, swapped in place; a replayed row then follows the page's live
stream (:mod:`~genspool.api.ui.live`; polling itself every 2 s while the stream is down) until
its job ends again, and new dead letters appear on the first page, without a reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.ui.jobs import MAX_LIMIT, SINCE_CHOICES, page_of, parse_filters
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.job import TERMINAL, Job, JobStatus
from genspool.core.keys import Scope
from genspool.exceptions import GenspoolError, InvalidRequest

__all__ = ["Row", "router"]

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Row:
    """A dead letter as its row shows it: the job now, and what a replay of it said."""

    job: Job
    replayed: bool = False
    problem: str | None = None

    @property
    def live(self) -> bool:
        return self.replayed and self.job.status not in TERMINAL


@router.get("/dead-letters")
@ui_requires(Scope.READ)
async def dead_letters(request: Request, caller: UiCaller) -> Response:
    svc = services(request)
    query = {k: v for k, v in request.query_params.items() if k != "status"}
    f = parse_filters({**query, "status": JobStatus.FAILED.value}, caller)
    jobs, cursor = await page_of(svc, f)
    return await render(
        request,
        "dead_letters.html",
        caller,
        rows=[Row(j) for j in jobs],
        filters=f,
        next_query=f.query(after=cursor, status=None) if cursor else None,
        first_query=f.query(after=None, status=None) if f.after else None,
        models=sorted(cfg.name for cfg in svc.catalog),
        since_choices=SINCE_CHOICES,
        now=svc.queue.clock(),
    )


@router.get("/dead-letters/{job_id}/row")
@ui_requires(Scope.READ)
async def row(request: Request, caller: UiCaller, job_id: str) -> Response:
    """A replayed row, polled until its job ends again."""
    job = await services(request).queue.get(job_id, caller.sees)
    return await _rows(request, caller, [Row(job, replayed=True)])


@router.post("/dead-letters/{job_id}/replay")
@ui_requires(Scope.SUBMIT)
async def replay_one(request: Request, caller: UiCaller, job_id: str) -> Response:
    return await _rows(request, caller, [await _replay(request, caller, job_id)])


@router.post("/dead-letters/replay")
@ui_requires(Scope.SUBMIT)
async def replay_selected(request: Request, caller: UiCaller) -> Response:
    """The ticked rows (form field ``ids``, repeated), each replayed and answered out of band."""
    ids = [i for i in (await request.form()).getlist("ids") if isinstance(i, str)]
    if not ids:
        raise InvalidRequest("ids: tick at least one dead letter to replay", param="ids")
    if len(ids) > MAX_LIMIT:
        raise InvalidRequest(f"ids: at most {MAX_LIMIT} at a time", param="ids")
    rows = [await _replay(request, caller, i) for i in dict.fromkeys(ids)]
    return await _rows(request, caller, rows, oob=True)


async def _replay(request: Request, caller: Caller, job_id: str) -> Row:
    """Replay one job; a job that cannot be (replayed already, another tenant's) gives a row
    that says why, as the API would (404, 409), instead of failing the whole selection."""
    queue = services(request).queue
    try:
        return Row(await queue.replay(job_id, caller.sees), replayed=True)
    except GenspoolError as exc:
        if exc.status_code >= 500:
            raise
        job = await queue.get(job_id, caller.sees)  # a 404 stays a 404
        return Row(job, replayed=False, problem=exc.message)


async def _rows(request: Request, caller: Caller, rows: list[Row], oob: bool = False) -> Response:
    return await render(
        request,
        "_dead_letter_rows.html",
        caller,
        rows=rows,
        oob=oob,
        now=services(request).queue.clock(),
    )
