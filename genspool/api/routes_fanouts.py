"""Fan-outs: ``POST /v1/fanouts`` answers 202 with the parent job at once.

The request is checked whole before anything is queued: each branch as a job of its model would
be (model, endpoint, parameters, prompt size; an error names the branch), a map's and a reduce's
templates filled with sample values and checked the same way, load shedding per target model. An
``event`` is matched against the routes here and their targets rendered, so the parent job's body
(a :class:`~genspool.fanout.spec.Plan`) holds explicit branches only. The parent is then an
ordinary job: ``GET /v1/jobs/{id}``, its events over SSE and WebSocket (one ``branch`` event per
branch as it ends), cancel and replay.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from genspool.api.auth import Caller, Principal, requires
from genspool.api.bodies import check_inputs
from genspool.api.deps import Services, Svc
from genspool.api.routes_jobs import read_body
from genspool.api.schemas import request_body
from genspool.api.validation import validate_request
from genspool.config import FANOUT_MODEL
from genspool.core.job import Job
from genspool.core.keys import Scope
from genspool.core.models import RESERVED, SCOPES
from genspool.exceptions import GenspoolError, InvalidRequest
from genspool.fanout.spec import FANOUT_ENDPOINT, MAX_BRANCHES, FanoutCreate, Plan, PlannedBranch
from genspool.fanout.template import TemplateError, placeholders, render

__all__ = ["fanout_job", "plan_fanout", "router"]

router = APIRouter(prefix="/v1", tags=["fan-out"])


@router.post(
    "/fanouts",
    status_code=202,
    summary="Fan a request out to several models, agents or pieces of work; 202 with the parent",
    openapi_extra=request_body(FanoutCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def create_fanout(request: Request, svc: Svc, caller: Principal) -> JSONResponse:
    spec = _spec(await read_body(request, svc))
    job = fanout_job(spec, await plan_fanout(svc, spec, caller), caller)
    stored = await svc.queue.submit(job)
    return JSONResponse(stored.public(), status_code=202 if stored is job else 200)


def fanout_job(spec: FanoutCreate, plan: Plan, caller: Caller) -> Job:
    """The parent job of a checked fan-out (:func:`plan_fanout`), not yet submitted."""
    metadata = {k: v for k, v in spec.metadata.items() if k not in RESERVED}
    metadata[SCOPES] = sorted(caller.scopes)
    return Job(
        url=FANOUT_ENDPOINT,
        body=plan.model_dump(mode="json", exclude_none=True),
        model=FANOUT_MODEL["name"],
        tenant=caller.tenant,
        priority=spec.priority,
        max_attempts=int(FANOUT_MODEL["max_attempts"]),
        idempotency_key=spec.idempotency_key,
        metadata=metadata,
    )


def _spec(raw: Any) -> FanoutCreate:
    if not isinstance(raw, dict):
        raise InvalidRequest("body: must be a JSON object with branches, event or map")
    try:
        return FanoutCreate.model_validate(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


async def plan_fanout(svc: Services, spec: FanoutCreate, caller: Caller) -> Plan:
    """The parent's body: routes matched, every branch checked and counted, or a 4xx."""
    routes: list[str] = []
    if spec.branches is not None:
        branches = [PlannedBranch(**b.model_dump()) for b in spec.branches]
    elif spec.event is not None:
        matched = await svc.routes.match(spec.event)
        if not matched:
            raise InvalidRequest("event: it matches no route, so there is nothing to run")
        routes = [r.name for r in matched]
        branches = [b for r in matched for b in r.branches(spec.event)]
        if len(branches) > MAX_BRANCHES:
            raise InvalidRequest(
                f"event: its routes make {len(branches)} branches; at most {MAX_BRANCHES}"
            )
    else:
        branches = []
    for i, branch in enumerate(branches):
        where = f"branches[{i}] ({branch.name})"
        branch.prompt_tokens = _check(svc, where, branch.url, branch.body, spec.priority, caller)
        try:
            await check_inputs(svc.files, branch.url, branch.body, caller.tenant)
        except GenspoolError as exc:
            raise InvalidRequest(f"{where}: {exc.message}", param=exc.param) from None
    if spec.map is not None:
        marker = "chunk" if spec.map.text is not None else "item"
        _uses(spec.map.body, marker, "map.body")
        sample = render(spec.map.body, {marker: "x", "index": 0})
        _check(svc, "map", spec.map.url, sample, spec.priority, caller)
    if spec.reduce is not None:
        _uses(spec.reduce.body, "outputs", "reduce.body")
        try:
            sample = render(spec.reduce.body, {"outputs": "x", "branches": []})
        except TemplateError as exc:
            raise InvalidRequest(f"reduce.body: {exc} (it may use outputs and branches)") from exc
        _check(svc, "reduce", spec.reduce.url, sample, spec.priority, caller)
    if spec.aggregate.match == "embedding" and spec.aggregate.model:
        _check(
            svc,
            "aggregate",
            "/v1/embeddings",
            {"model": spec.aggregate.model, "input": "x"},
            spec.priority,
            caller,
        )
    return Plan(
        branches=branches,
        map=spec.map,
        aggregate=spec.aggregate,
        reduce=spec.reduce,
        deadline_s=spec.deadline_s,
        routes=routes,
    )


def _check(
    svc: Services, where: str, url: str, body: Any, priority: int, caller: Caller
) -> int | None:
    """A branch's request checked as a job of its model would be; its prompt tokens."""
    try:
        cfg, tokens = validate_request(svc.catalog, url, body)
        svc.admission.check(cfg, priority, tenant=caller.tenant)
    except GenspoolError as exc:
        exc.message = f"{where}: {exc.message}"
        exc.args = (exc.message,)
        raise
    return tokens


def _uses(body: dict[str, Any], name: str, where: str) -> None:
    if name not in set(placeholders(body)):
        raise InvalidRequest(f"{where}: must use {{{{{name}}}}} where the {name} goes", param=where)
