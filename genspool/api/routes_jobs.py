"""Jobs and dead letters: submit, read, list, cancel, replay.

One job (``GET /v1/jobs/{id}``, and the answers of cancel and replay) shows everything: its
submitted ``request`` (url and body) and its ``history`` of attempts. A list leaves both out, as
they can be large (a body of a long chat, up to 50 attempts), unless ``?include=request,history``
asks for them; the answer of a submit leaves them out too (the caller has just sent them).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.api.auth import Principal, requires
from genspool.api.bodies import check_inputs
from genspool.api.deps import Services, Svc
from genspool.api.feasibility import check_feasible
from genspool.api.jsonbody import parse_json
from genspool.api.routes_prompts import rendered
from genspool.api.schemas import request_body
from genspool.api.validation import validate_request
from genspool.backends import JobFilter
from genspool.config import ANSWER_MODEL
from genspool.core.job import Job, JobStatus
from genspool.core.keys import Scope
from genspool.core.models import PROMPT, PROMPT_TOKENS, RESERVED, SCOPES
from genspool.exceptions import InvalidRequest, NotFound
from genspool.rag.answer import answer_spec, is_answer

__all__ = [
    "MAX_EXPIRES_AHEAD_S",
    "JobCreate",
    "build_job",
    "check_stores",
    "read_body",
    "router",
]

router = APIRouter(prefix="/v1", tags=["jobs"])

#: How far ahead ``expires_at`` may be: beyond it, more likely milliseconds or a typo.
MAX_EXPIRES_AHEAD_S = 366 * 86_400.0


class JobCreate(BaseModel):
    """One OpenAI-style request (a line of the Batch API) plus queue options."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="The OpenAI endpoint, e.g. /v1/chat/completions or /v1/embeddings."
    )
    body: dict[str, Any] = Field(description="The request body, exactly as for that endpoint.")
    custom_id: str | None = Field(None, description="Your id; kept in metadata.")
    idempotency_key: str | None = Field(None, max_length=255, description="Same key, same job.")
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    expires_at: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Unix time in seconds, at most 366 days ahead; not started by then → expired.",
    )
    max_attempts: int | None = Field(None, ge=1, le=100, description="Default: the model's.")
    metadata: dict[str, Any] = Field(default_factory=dict)


def build_job(
    svc: Services,
    spec: JobCreate,
    *,
    tenant: str = "default",
    scopes: Collection[str] | None = None,
    prompt: dict[str, Any] | None = None,
) -> Job:
    """The job of a checked request. ``scopes``: the caller's, kept with the job for the
    agents' tool calls (None: a caller of library code, trusted with every scope).
    ``prompt``: the stored prompt its body was rendered from (``routes_prompts.rendered``)."""
    if is_answer(spec.url, spec.body):  # a file_search: a job of genspool's answer model
        answer_spec(spec.body, svc.catalog.card)
        cfg, prompt_tokens = svc.catalog.config(str(ANSWER_MODEL["name"])), None
    else:
        cfg, prompt_tokens = validate_request(svc.catalog, spec.url, spec.body)
    _check_expiry(spec.expires_at, svc.queue.clock())
    check_feasible(svc.queue.storage.kv, cfg, spec.url, spec.body)
    svc.admission.check(cfg, spec.priority, tenant=tenant)  # last: a refused one is not counted
    metadata = {k: v for k, v in spec.metadata.items() if k not in RESERVED}
    if prompt_tokens is not None:  # only the API's own count goes on to the worker
        metadata[PROMPT_TOKENS] = prompt_tokens
    if scopes is not None:
        metadata[SCOPES] = sorted(scopes)
    if spec.custom_id is not None:
        metadata["custom_id"] = spec.custom_id
    if prompt is not None:
        metadata[PROMPT] = prompt
    return Job(
        url=spec.url,
        body=spec.body,
        model=cfg.name,
        tenant=tenant,
        priority=spec.priority,
        max_attempts=spec.max_attempts or cfg.max_attempts,
        idempotency_key=spec.idempotency_key,
        metadata=metadata,
        expires_at=spec.expires_at,
    )


async def check_stores(svc: Services, url: str, body: Any, tenant: str) -> None:
    """An answer's vector stores are the caller's: a 404 naming the first that is not (after
    the request itself is checked: a bad one is a 400 whatever its stores)."""
    if not is_answer(url, body):
        return
    answer_spec(body, svc.catalog.card)
    records = svc.queue.storage.vectors
    if records is None:
        raise InvalidRequest("tools: this deployment keeps no vector stores", param="tools")
    for tool in body["tools"]:
        for store_id in (tool.get("vector_store_ids") or []) if isinstance(tool, dict) else []:
            if isinstance(store_id, str) and await records.store_get(store_id, tenant) is None:
                raise NotFound(f"no vector store {store_id!r}", param="vector_store_ids")


def _check_expiry(expires_at: float | None, now: float) -> None:
    if expires_at is None:
        return
    if expires_at <= now:
        raise InvalidRequest(f"expires_at: {expires_at} is already in the past", param="expires_at")
    if expires_at > now + MAX_EXPIRES_AHEAD_S:
        raise InvalidRequest(
            f"expires_at: {expires_at} is more than 366 days ahead; send Unix time in seconds"
            " (not milliseconds), or leave it out for no expiry",
            param="expires_at",
        )


async def read_body(request: Request, svc: Services) -> Any:
    """The request's JSON, parsed once (:mod:`genspool.api.jsonbody`): what no store can keep
    is a 400 naming the field, before anything else is done."""
    return parse_json(await request.body(), max_depth=svc.max_json_depth)


def _spec(raw: Any) -> JobCreate:
    if not isinstance(raw, dict):
        raise InvalidRequest('body: must be a JSON object, {"url": ..., "body": {...}}')
    try:
        return JobCreate.model_validate(raw)
    except ValidationError as exc:
        # Reported as FastAPI reports a body it validated itself (the same message and param).
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


@router.post(
    "/jobs",
    status_code=202,
    summary="Submit a job; answers at once with its id",
    openapi_extra=request_body(JobCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def submit(request: Request, svc: Svc, caller: Principal) -> JSONResponse:
    spec = _spec(await read_body(request, svc))
    body, prompt = await rendered(svc, spec.url, spec.body, caller.tenant)
    spec = spec.model_copy(update={"body": body})
    # Before build_job, whose admission check comes last (a refused job is not counted).
    await check_inputs(svc.files, spec.url, spec.body, caller.tenant)
    await check_stores(svc, spec.url, spec.body, caller.tenant)
    job = build_job(svc, spec, tenant=caller.tenant, scopes=caller.scopes, prompt=prompt)
    stored = await svc.queue.submit(job)
    status = 202 if stored is job else 200  # 200: an earlier job with this idempotency key
    return JSONResponse(stored.public(), status_code=status)


#: What one job's representation adds to a list's: the submitted request and every attempt.
FULL = ("request", "history")


def _includes(include: str | None) -> tuple[str, ...]:
    """``?include=request,history``: the parts of each job a list leaves out for size."""
    if include is None:
        return ()
    parts = tuple(p.strip() for p in include.split(",") if p.strip())
    unknown = sorted(set(parts) - set(FULL))
    if unknown:
        raise InvalidRequest(
            f"include: unknown part {unknown[0]!r}; one or more of {', '.join(FULL)}",
            param="include",
        )
    return parts


IncludeQuery = Annotated[
    str | None,
    Query(
        description="Comma-separated parts to add to each job: request (its url and body), "
        "history (its attempts). One job (GET /v1/jobs/{id}) always has both."
    ),
]


@router.get(
    "/jobs/{job_id}",
    summary="A job: its request, its attempts, and its result once it has one",
)
@requires(Scope.READ)
async def get_job(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.get(job_id, caller.sees)).public(include=FULL)


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
@requires(Scope.SUBMIT)
async def cancel_job(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.cancel(job_id, caller.sees)).public(include=FULL)


@router.delete("/jobs/{job_id}", summary="Cancel a queued or running job")
@requires(Scope.SUBMIT)
async def delete_job(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return await cancel_job(svc, caller, job_id)


#: ``?tenant=``: admin only; a key without ``admin`` always sees its own tenant.
TenantQuery = Annotated[str | None, Query(description="Admin: only this tenant's jobs.")]


@router.get("/jobs", summary="Jobs, newest first; page with ?after=<last id>")
@requires(Scope.READ)
async def list_jobs(
    svc: Svc,
    caller: Principal,
    status: JobStatus | None = None,
    model: str | None = None,
    tenant: TenantQuery = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    include: IncludeQuery = None,
) -> dict[str, Any]:
    flt = JobFilter(status, model, caller.listing(tenant), before=after, limit=limit)
    return await _page(svc, flt, _includes(include))


@router.get("/dlq", summary="Dead letters: jobs that failed for good, newest first")
@requires(Scope.READ)
async def list_dead_letters(
    svc: Svc,
    caller: Principal,
    model: str | None = None,
    tenant: TenantQuery = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    include: IncludeQuery = None,
) -> dict[str, Any]:
    flt = JobFilter(JobStatus.FAILED, model, caller.listing(tenant), before=after, limit=limit)
    return await _page(svc, flt, _includes(include))


@router.post(
    "/jobs/{job_id}/replay",
    summary="Queue an ended job again: failed, cancelled or expired (fresh attempts)",
)
@requires(Scope.SUBMIT)
async def replay(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.replay(job_id, caller.sees)).public(include=FULL)


@router.post(
    "/dlq/{job_id}/replay", summary="Queue a dead-lettered (or cancelled, expired) job again"
)
@requires(Scope.SUBMIT)
async def replay_dead_letter(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return await replay(svc, caller, job_id)


async def _page(svc: Services, flt: JobFilter, include: tuple[str, ...] = ()) -> dict[str, Any]:
    jobs = await svc.queue.list_jobs(
        JobFilter(flt.status, flt.model, flt.tenant, flt.before, flt.limit + 1)
    )
    more = len(jobs) > flt.limit
    data = [j.public(include=include) for j in jobs[: flt.limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "next_cursor": data[-1]["id"] if more else None,
    }
