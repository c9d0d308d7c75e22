"""Fan-out routes: ``GET/PUT/DELETE /v1/routes/{name}`` (admin) and ``POST /v1/routes/test``.

A route is a name, an EventBridge event pattern and its targets (:mod:`genspool.fanout.routes`).
Routes written here are kept by the backend and seen by every API process within a second;
routes of the models file are listed too (``source: config``) and cannot be changed here. An
invalid pattern is a 400 naming the path of the offending part. ``POST /v1/routes/test`` checks a
pattern against an event without storing anything, so a rule can be tried before it is deployed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from genspool.api.auth import requires
from genspool.api.deps import Svc
from genspool.api.routes_jobs import read_body
from genspool.api.schemas import request_body
from genspool.core.keys import Scope
from genspool.core.patterns import PatternError, compile_pattern
from genspool.exceptions import InvalidRequest
from genspool.fanout.routes import Route

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["fan-out"])


@router.get("/routes", summary="The fan-out routes, by name")
@requires(Scope.READ)
async def list_routes(svc: Svc) -> dict[str, Any]:
    data = [route.public(source=source) for route, source in await svc.routes.routes()]
    return {"object": "list", "data": data}


@router.post("/routes/test", summary="Whether an event matches a pattern (nothing is stored)")
@requires(Scope.READ)
async def test_route(request: Request, svc: Svc) -> dict[str, Any]:
    raw = await read_body(request, svc)
    if not isinstance(raw, dict) or set(raw) != {"pattern", "event"}:
        raise InvalidRequest('body: {"pattern": {...}, "event": {...}}, both and nothing else')
    try:
        matcher = compile_pattern(raw["pattern"])
    except PatternError as exc:
        raise InvalidRequest(f"pattern: invalid at {exc}", param=f"pattern.{exc.path}") from exc
    return {"match": matcher(raw["event"])}


@router.get("/routes/{name}", summary="One route")
@requires(Scope.READ)
async def get_route(svc: Svc, name: str) -> dict[str, Any]:
    route, source = await svc.routes.get(name)
    return route.public(source=source)


@router.put(
    "/routes/{name}",
    summary="Create or replace a route (admin)",
    openapi_extra=request_body(Route),
)
@requires(Scope.ADMIN)
async def put_route(request: Request, svc: Svc, name: str) -> JSONResponse:
    raw = await read_body(request, svc)
    if not isinstance(raw, dict):
        raise InvalidRequest("body: a route, {pattern, targets, description}")
    if raw.get("name", name) != name:
        raise InvalidRequest(
            f"name: the body names {raw['name']!r}, the URL {name!r}", param="name"
        )
    try:
        route = Route.model_validate({**raw, "name": name})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"{where}: {message}", param=where) from exc
    created = await svc.routes.put(route)
    return JSONResponse(route.public(source="api"), status_code=201 if created else 200)


@router.delete("/routes/{name}", summary="Delete a route (admin)")
@requires(Scope.ADMIN)
async def delete_route(svc: Svc, name: str) -> dict[str, Any]:
    await svc.routes.delete(name)
    return {"id": name, "object": "route", "deleted": True}
