"""Pipelines: the configured pipelines, their runs (start, read, list, cancel), a run's items
and events, and a schedule's ticks.

``POST /v1/pipelines/{name}/runs`` answers 202 with the run at once (``queued``); an API
process's runner takes it through its items (:mod:`genspool.pipelines`). Runs are
tenant-scoped: another tenant's run, like a missing one, is 404 on every route (an admin key
reaches every tenant's). A run's events (``GET …/events``, SSE, or the same path as a
WebSocket) are its record each time it changes, from the store, so any API process serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.routes_jobs import read_body
from genspool.api.schemas import request_body
from genspool.core.keys import Scope
from genspool.exceptions import ConfigError, InvalidRequest
from genspool.pipelines.service import (
    MAX_LIST_LIMIT,
    Pipelines,
    public_item,
    public_run,
)

__all__ = ["RunCreate", "router"]

router = APIRouter(prefix="/v1", tags=["pipelines"])

#: How often a run's event stream reads the record.
EVENTS_POLL_S = 0.5


class PipelinesUnavailable(ConfigError):
    status_code = 501
    code = "pipelines_unavailable"


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict, description="The pipeline's inputs.")
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    idempotency_key: str | None = Field(None, max_length=255, description="Same key, same run.")
    force: bool = Field(
        False, description="Run every item, even those an earlier run of the pipeline finished."
    )


def _pipelines(svc: Services) -> Pipelines:
    if svc.pipelines is None:
        raise PipelinesUnavailable(
            "this deployment keeps no pipeline runs: its store is a Redis or NATS server alone;"
            " run with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL"
            " set to the Redis or NATS server (the queue)"
        )
    return svc.pipelines


def _spec(raw: Any) -> RunCreate:
    if not isinstance(raw, dict):
        raise InvalidRequest("body: must be a JSON object (inputs, metadata, …)")
    try:
        return RunCreate.model_validate(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


def _list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    }  # fmt: skip


@router.get("/pipelines", summary="The configured pipelines: triggers, inputs, steps, sinks")
@requires(Scope.READ)
async def list_pipelines(svc: Svc, caller: Principal) -> dict[str, Any]:
    found = _pipelines(svc).pipelines
    return {"object": "list", "data": [p.public() for p in found.values()]}


@router.get("/pipelines/{name}", summary="One configured pipeline")
@requires(Scope.READ)
async def get_pipeline(svc: Svc, caller: Principal, name: str) -> dict[str, Any]:
    return _pipelines(svc).pipeline(name).public()


@router.post(
    "/pipelines/{name}/runs",
    status_code=202,
    summary="Start a run of a pipeline; 202 with the run",
    openapi_extra=request_body(RunCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def start_run(request: Request, svc: Svc, caller: Principal, name: str) -> JSONResponse:
    raw = await read_body(request, svc) if await request.body() else {}
    spec = _spec(raw)
    pipes = _pipelines(svc)
    run, new = await pipes.start(
        name, tenant=caller.tenant, inputs=spec.inputs, metadata=spec.metadata,
        idempotency_key=spec.idempotency_key, force=spec.force,
        scopes=tuple(sorted(caller.scopes)),
    )  # fmt: skip
    return JSONResponse(public_run(run, svc.queue.clock()), status_code=202 if new else 200)


@router.get("/pipelines/{name}/runs", summary="A pipeline's runs, newest first")
@requires(Scope.READ)
async def list_runs(
    svc: Svc,
    caller: Principal,
    name: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
) -> dict[str, Any]:
    pipes = _pipelines(svc)
    pipes.pipeline(name)
    found = await pipes.page(caller.sees, name, after=after, limit=limit)
    now = svc.queue.clock()
    return _list([public_run(r, now) for r in found.data], found.has_more)


@router.get("/pipelines/{name}/runs/{run_id}", summary="A run: status, counts, rate, files")
@requires(Scope.READ)
async def get_run(svc: Svc, caller: Principal, name: str, run_id: str) -> dict[str, Any]:
    run = await _pipelines(svc).get(run_id, caller.sees, name)
    return public_run(run, svc.queue.clock())


@router.post(
    "/pipelines/{name}/runs/{run_id}/cancel",
    summary="Cancel a run: items finished so far are kept in its sinks",
)
@requires(Scope.SUBMIT)
async def cancel_run(svc: Svc, caller: Principal, name: str, run_id: str) -> dict[str, Any]:
    run = await _pipelines(svc).cancel(run_id, caller.sees, name)
    return public_run(run, svc.queue.clock())


@router.get("/pipelines/{name}/runs/{run_id}/items", summary="A run's items, in source order")
@requires(Scope.READ)
async def list_items(
    svc: Svc,
    caller: Principal,
    name: str,
    run_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: str | None = None,
) -> dict[str, Any]:
    pipes = _pipelines(svc)
    run = await pipes.get(run_id, caller.sees, name)
    items = await pipes.items(run, after=after, limit=limit, status=status)
    return {
        "object": "list", "data": [public_item(i) for i in items],
        "last_seq": items[-1].seq if items else None, "has_more": len(items) == limit,
    }  # fmt: skip


@router.get("/pipelines/{name}/ticks", summary="A schedule's ticks: fired, skipped or missed")
@requires(Scope.READ)
async def list_ticks(
    svc: Svc,
    caller: Principal,
    name: str,
    before: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    ticks = await _pipelines(svc).ticks(name, before=before, limit=limit)
    data = [
        {"at": t.at, "outcome": t.outcome, "run_id": t.run_id, "recorded_at": t.recorded_at}
        for t in ticks
    ]
    return {"object": "list", "data": data}


async def _changes(
    svc: Services, run_id: str, tenant: str | None, name: str
) -> AsyncIterator[dict[str, Any]]:
    """The run's record each time its version moves, until it ends."""
    pipes = _pipelines(svc)
    version = -1
    while True:
        run = await pipes.get(run_id, tenant, name)
        if run.version != version:
            version = run.version
            yield public_run(run, svc.queue.clock())
        if run.terminal:
            return
        await asyncio.sleep(EVENTS_POLL_S)


@router.get("/pipelines/{name}/runs/{run_id}/events", summary="A run's changes (SSE)")
@requires(Scope.READ)
async def run_events(svc: Svc, caller: Principal, name: str, run_id: str) -> StreamingResponse:
    await _pipelines(svc).get(run_id, caller.sees, name)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        async for state in _changes(svc, run_id, caller.sees, name):
            yield b"event: run\ndata: " + orjson.dumps(state) + b"\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.websocket("/pipelines/{name}/runs/{run_id}/events")
@requires(Scope.READ)
async def run_events_ws(ws: WebSocket, svc: Svc, caller: Principal, name: str, run_id: str) -> None:
    await _pipelines(svc).get(run_id, caller.sees, name)
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect):
        async for state in _changes(svc, run_id, caller.sees, name):
            await ws.send_json({"type": "run", "run": state})
        await ws.close()
