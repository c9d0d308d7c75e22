"""The Batch API, wire-compatible with OpenAI's: create, retrieve, list, cancel.

A batch runs each line of its input file as an ordinary job at a bulk priority
(:mod:`genspool.batches`). Every route is tenant-scoped: another tenant's batch, like a missing
one, is 404 (an admin key reaches every tenant's). A deployment whose store keeps no files (a
Redis or NATS server alone) keeps no batches either: the routes answer 501.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.routes_files import MAX_EXPIRES_AFTER_S, MIN_EXPIRES_AFTER_S
from genspool.api.routes_jobs import read_body
from genspool.api.schemas import request_body
from genspool.batches import Batches
from genspool.batches.output import usage_json
from genspool.batches.service import MAX_LIST_LIMIT
from genspool.core.batch import Batch
from genspool.core.keys import Scope
from genspool.exceptions import ConfigError, InvalidRequest

__all__ = ["BatchCreate", "batch_json", "router"]

router = APIRouter(prefix="/v1", tags=["batches"])


class BatchesUnavailable(ConfigError):
    """The deployment's store keeps no batches (a Redis or NATS server alone)."""

    status_code = 501
    code = "batches_unavailable"


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_EXPIRES_AFTER_S, le=MAX_EXPIRES_AFTER_S)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(description="A file uploaded with purpose 'batch'.")
    endpoint: str = Field(description="Where every line goes, e.g. /v1/chat/completions.")
    completion_window: str = Field(
        description="24h, or any duration from 1s to 30d (60s, 1h, 7d): lines not run by then"
        " end as batch_expired."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    output_expires_after: ExpiresAfter | None = None


def _batches(svc: Services) -> Batches:
    if svc.batches is None:
        raise BatchesUnavailable(
            "this deployment keeps no batches: its store is a Redis or NATS server alone; run"
            " with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL set"
            " to the Redis or NATS server (the queue)"
        )
    return svc.batches


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_json(b: Batch) -> dict[str, Any]:
    """A batch as OpenAI's API shows it."""
    errors = {"object": "list", "data": list(b.errors)} if b.errors else None
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "model": None, "errors": errors,
        "input_file_id": b.input_file_id, "completion_window": b.completion_window,
        "status": b.status.value, "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id, "created_at": int(b.created_at),
        "in_progress_at": _ts(b.in_progress_at), "expires_at": _ts(b.expires_at),
        "finalizing_at": _ts(b.finalizing_at), "completed_at": _ts(b.completed_at),
        "failed_at": _ts(b.failed_at), "expired_at": _ts(b.expired_at),
        "cancelling_at": _ts(b.cancelling_at), "cancelled_at": _ts(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.metadata, "usage": usage_json(b.usage),
    }  # fmt: skip


def _spec(raw: Any) -> BatchCreate:
    if not isinstance(raw, dict):
        raise InvalidRequest("body: must be a JSON object with input_file_id, endpoint, ...")
    try:
        return BatchCreate.model_validate(raw)
    except ValidationError as exc:  # reported as FastAPI reports a body it validated itself
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


@router.post(
    "/batches",
    summary="Create a batch from an uploaded input file",
    openapi_extra=request_body(BatchCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def create_batch(request: Request, svc: Svc, caller: Principal) -> dict[str, Any]:
    spec = _spec(await read_body(request, svc))
    expires = spec.output_expires_after
    made = await _batches(svc).create(
        tenant=caller.tenant,
        input_file_id=spec.input_file_id,
        endpoint=spec.endpoint,
        completion_window=spec.completion_window,
        metadata=spec.metadata,
        output_expires_after_s=None if expires is None else float(expires.seconds),
        scopes=tuple(sorted(caller.scopes)),
    )
    return batch_json(made)


@router.get("/batches/{batch_id}", summary="A batch: its status, counts, usage and files")
@requires(Scope.READ)
async def retrieve_batch(svc: Svc, caller: Principal, batch_id: str) -> dict[str, Any]:
    return batch_json(await _batches(svc).get(batch_id, caller.sees))


@router.get("/batches", summary="Batches, newest first; page with ?after=<last id>")
@requires(Scope.READ)
async def list_batches(
    svc: Svc,
    caller: Principal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
) -> dict[str, Any]:
    found = await _batches(svc).page(caller.sees, after=after, limit=limit)
    data = [batch_json(b) for b in found.data]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": found.has_more,
    }


@router.post(
    "/batches/{batch_id}/cancel",
    summary="Cancel a batch: finished lines are kept, the rest end as batch_cancelled",
)
@requires(Scope.SUBMIT)
async def cancel_batch(svc: Svc, caller: Principal, batch_id: str) -> dict[str, Any]:
    return batch_json(await _batches(svc).cancel(batch_id, caller.sees))
