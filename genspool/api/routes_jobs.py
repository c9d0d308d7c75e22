"""Jobs and dead letters: submit, read, list, cancel, replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.validation import validate_request
from genspool.backends import JobFilter
from genspool.core.job import Job, JobStatus
from genspool.core.keys import Scope
from genspool.core.models import PROMPT_TOKENS
from genspool.exceptions import InvalidRequest

__all__ = ["JobCreate", "build_job", "router"]

router = APIRouter(prefix="/v1", tags=["jobs"])


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
    expires_at: float | None = Field(None, description="Unix time; not started by then → expired.")
    max_attempts: int | None = Field(None, ge=1, le=100, description="Default: the model's.")
    metadata: dict[str, Any] = Field(default_factory=dict)


def build_job(svc: Services, spec: JobCreate, *, tenant: str = "default") -> Job:
    cfg, prompt_tokens = validate_request(svc.catalog, spec.url, spec.body)
    if spec.expires_at is not None and spec.expires_at <= svc.queue.clock():
        raise InvalidRequest(
            f"expires_at: {spec.expires_at} is already in the past", param="expires_at"
        )
    svc.admission.check(cfg, spec.priority)  # last: a refused request is not counted
    metadata = dict(spec.metadata)
    metadata.pop(PROMPT_TOKENS, None)  # only the API's own count goes on to the worker
    if prompt_tokens is not None:
        metadata[PROMPT_TOKENS] = prompt_tokens
    if spec.custom_id is not None:
        metadata["custom_id"] = spec.custom_id
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


@router.post("/jobs", status_code=202, summary="Submit a job; answers at once with its id")
@requires(Scope.SUBMIT, submits=True)
async def submit(svc: Svc, caller: Principal, spec: JobCreate) -> JSONResponse:
    job = build_job(svc, spec, tenant=caller.tenant)
    stored = await svc.queue.submit(job)
    status = 202 if stored is job else 200  # 200: an earlier job with this idempotency key
    return JSONResponse(stored.public(), status_code=status)


@router.get("/jobs/{job_id}", summary="A job, with its result once it has one")
@requires(Scope.READ)
async def get_job(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.get(job_id, caller.sees)).public()


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
@requires(Scope.SUBMIT)
async def cancel_job(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.cancel(job_id, caller.sees)).public()


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
) -> dict[str, Any]:
    flt = JobFilter(status, model, caller.listing(tenant), before=after, limit=limit)
    return await _page(svc, flt)


@router.get("/dlq", summary="Dead letters: jobs that failed for good, newest first")
@requires(Scope.READ)
async def list_dead_letters(
    svc: Svc,
    caller: Principal,
    model: str | None = None,
    tenant: TenantQuery = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    flt = JobFilter(JobStatus.FAILED, model, caller.listing(tenant), before=after, limit=limit)
    return await _page(svc, flt)


@router.post("/dlq/{job_id}/replay", summary="Queue a dead-lettered job again")
@requires(Scope.SUBMIT)
async def replay(svc: Svc, caller: Principal, job_id: str) -> dict[str, Any]:
    return (await svc.queue.replay(job_id, caller.sees)).public()


async def _page(svc: Services, flt: JobFilter) -> dict[str, Any]:
    jobs = await svc.queue.list_jobs(
        JobFilter(flt.status, flt.model, flt.tenant, flt.before, flt.limit + 1)
    )
    more = len(jobs) > flt.limit
    data = [j.public() for j in jobs[: flt.limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "next_cursor": data[-1]["id"] if more else None,
    }
