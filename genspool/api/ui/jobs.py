"""``/ui/jobs``: jobs newest first, filtered by what the URL says; a job's own page; cancel.

Filters (``status``, ``model``, ``tenant`` for admins, ``since``/``until``, ``limit``) and the
page (``after``, the last id of the page before) are query parameters, so a view can be
bookmarked and shared. Pages are keyset pages of the store's own listing (the API's
``GET /v1/jobs``): no count, however many jobs there are. The time range becomes a bound on
the job ids, which are time-ordered (:func:`~genspool.core.job.new_job_id`).

Rows that have not ended follow the page's live stream (:mod:`~genspool.api.ui.live`), which
also adds the jobs that enter a first page's filters; a job's page follows its job there, its
tokens too. While the stream is down they poll one fragment (``/ui/jobs/live``) every 2 s,
which answers their current rows out of band, and a job's page polls its own detail.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.deps import Services, services
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.job import TERMINAL, Job, JobStatus
from genspool.core.keys import Scope
from genspool.core.models import TRACEPARENT
from genspool.core.roles import JobFilter
from genspool.exceptions import InvalidRequest

__all__ = [
    "Filters",
    "id_at",
    "live_ids",
    "page_of",
    "parse_filters",
    "parse_instant",
    "router",
    "trace_id",
]

router = APIRouter(include_in_schema=False)

DEFAULT_LIMIT, MAX_LIMIT = 25, 200
#: Most rows one live poll asks about (a page's worth).
MAX_LIVE = MAX_LIMIT
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_JOB_ID = re.compile(r"^job_[0-9a-f]{1,40}$")
#: The choices of the form's "since" menu: (value, label).
SINCE_CHOICES = (("", "any time"), ("15m", "last 15 min"), ("1h", "last hour"),
                 ("24h", "last day"), ("7d", "last week"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Filters:
    """What a jobs view shows, as its URL says it."""

    status: JobStatus | None = None
    model: str | None = None
    tenant: str | None = None
    since: str | None = None
    until: str | None = None
    after: str | None = None
    limit: int = DEFAULT_LIMIT

    def query(self, **changes: Any) -> str:
        """The URL query of these filters with ``changes`` (None drops a parameter)."""
        values = {**asdict(self), **changes}
        if values["limit"] == DEFAULT_LIMIT:
            values["limit"] = None
        return urllib.parse.urlencode({k: str(v) for k, v in values.items() if v not in (None, "")})


def parse_filters(query: Mapping[str, str], caller: Caller) -> Filters:
    """The filters of a URL, each refused with a message naming it when it is wrong."""
    status = query.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        choices = ", ".join(s.value for s in JobStatus)
        raise InvalidRequest(f"status: {status[:40]!r} is not one of {choices}", param="status")
    after = query.get("after") or None
    if after is not None and not _JOB_ID.match(after):
        raise InvalidRequest("after: not a job id (job_…); use the page's next link", param="after")
    tenant = query.get("tenant") or None
    return Filters(
        status=JobStatus(status) if status else None,
        model=query.get("model") or None,
        tenant=caller.listing(tenant),
        since=query.get("since") or None,
        until=query.get("until") or None,
        after=after,
        limit=_limit(query.get("limit")),
    )


def _limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    return int(text)


def parse_instant(text: str, now: float, name: str) -> float:
    """A time as Unix seconds: a duration ago (``15m``, ``2h``, ``7d``) or an ISO 8601 time
    (UTC unless it says otherwise)."""
    found = _AGO.match(text.strip().lower())
    if found:
        return now - float(found[1]) * _UNITS[found[2]]
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name}: {text[:40]!r} is neither a time (2025-01-31T12:00, UTC) nor a duration"
            " ago (30s, 15m, 2h, 7d)",
            param=name,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def id_at(t: float) -> str:
    """The smallest id a job made at Unix time ``t`` can have (ids begin with the time of
    their making in hex nanoseconds, :func:`~genspool.core.job.new_job_id`): every job made
    before ``t`` sorts below it, every job made after above it."""
    return f"job_{max(int(t * 1e9), 0):x}"


async def page_of(svc: Services, f: Filters) -> tuple[list[Job], str | None]:
    """One page of jobs, newest first, and the cursor of the next (None: the last page)."""
    now = svc.queue.clock()
    before = f.after
    if f.until is not None:
        bound = id_at(parse_instant(f.until, now, "until"))
        before = bound if before is None else min(before, bound)
    floor = id_at(parse_instant(f.since, now, "since")) if f.since is not None else None
    listed = await svc.queue.list_jobs(JobFilter(f.status, f.model, f.tenant, before, f.limit + 1))
    kept = [j for j in listed if floor is None or j.id >= floor]
    more = len(kept) > f.limit  # past the floor, every later page would be empty
    jobs = kept[: f.limit]
    return jobs, (jobs[-1].id if more and jobs else None)


def trace_id(job: Job) -> str | None:
    """The trace id of the job's W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    value = job.metadata.get(TRACEPARENT)
    parts = value.split("-") if isinstance(value, str) else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def live_ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs if j.status not in TERMINAL]


@router.get("/jobs")
@ui_requires(Scope.READ)
async def jobs_page(request: Request, caller: UiCaller) -> Response:
    svc = services(request)
    f = parse_filters(request.query_params, caller)
    jobs, cursor = await page_of(svc, f)
    models = sorted({cfg.name for cfg in svc.catalog} | ({f.model} if f.model else set()))
    return await render(
        request,
        "jobs.html",
        caller,
        jobs=jobs,
        filters=f,
        next_query=f.query(after=cursor) if cursor else None,
        first_query=f.query(after=None) if f.after else None,
        live=live_ids(jobs),
        statuses=[s.value for s in JobStatus],
        models=models,
        since_choices=SINCE_CHOICES,
        now=svc.queue.clock(),
    )


@router.get("/jobs/live")
@ui_requires(Scope.READ)
async def live_rows(request: Request, caller: UiCaller, ids: str = "") -> Response:
    """The current rows of ``ids`` (out of band), and the poller again for those not ended."""
    wanted = [i for i in ids.split(",") if _JOB_ID.match(i)][:MAX_LIVE]
    svc = services(request)
    found = await svc.queue.get_many(wanted) if wanted else []
    jobs = [j for j in found if caller.sees is None or j.tenant == caller.sees]
    return await render(
        request, "_jobs_live.html", caller, jobs=jobs, live=live_ids(jobs), now=svc.queue.clock()
    )


async def _detail(request: Request, caller: Caller, job: Job, template: str) -> Response:
    return await render(
        request, template, caller, job=job, history=job.attempt_history(), trace=trace_id(job),
        terminal=job.status in TERMINAL, now=services(request).queue.clock(),
    )  # fmt: skip


@router.get("/jobs/{job_id}")
@ui_requires(Scope.READ)
async def job_page(request: Request, caller: UiCaller, job_id: str) -> Response:
    job = await services(request).queue.get(job_id, caller.sees)
    return await _detail(request, caller, job, "job.html")


@router.get("/jobs/{job_id}/detail")
@ui_requires(Scope.READ)
async def job_detail(request: Request, caller: UiCaller, job_id: str) -> Response:
    job = await services(request).queue.get(job_id, caller.sees)
    return await _detail(request, caller, job, "_job_detail.html")


@router.post("/jobs/{job_id}/cancel")
@ui_requires(Scope.SUBMIT)
async def cancel(request: Request, caller: UiCaller, job_id: str) -> Response:
    job = await services(request).queue.cancel(job_id, caller.sees)
    return await _detail(request, caller, job, "_job_detail.html")
