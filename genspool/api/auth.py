"""Who is calling, and what they may do: the one dependency every route runs.

The app factory installs :func:`authorize` as an app-wide dependency, so every route — those of
routers added later included — is checked. A route declares the scope it needs with
:func:`requires`; a route that declares nothing needs ``admin`` (least privilege by default).
While no API key exists the API is open (the embedded single-user default; the CLI then binds
to loopback only); once one exists, every route but the public ones needs
``Authorization: Bearer <key>`` — or, on a WebSocket, which browsers cannot give headers,
``?token=<key>``.

A caller sees one tenant's jobs; ``admin`` sees every tenant's. Routes pass
:attr:`Caller.sees` to the queue, which answers 404 for another tenant's job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import fastapi.routing
from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from genspool.api.deps import services
from genspool.core.job import now
from genspool.core.keys import ApiKey, KeyStore, Scope
from genspool.exceptions import Forbidden, RateLimited

__all__ = ["OPEN", "Caller", "Principal", "authorize", "document_scopes", "requires"]

F = TypeVar("F", bound=Callable[..., Any])
Needed = Scope | Literal["public"]

_DECLARED: dict[Callable[..., Any], tuple[Needed, bool]] = {}


def requires(scope: Needed, *, submits: bool = False) -> Callable[[F], F]:
    """Declare the scope an endpoint needs (``"public"``: none, not even a key). ``submits``:
    each call counts against the key's submission rate limit (``rpm``). Put it under the
    route decorator."""

    def mark(endpoint: F) -> F:
        _DECLARED[endpoint] = (scope, submits)
        return endpoint

    return mark


def declared(endpoint: Callable[..., Any] | None) -> tuple[Needed, bool]:
    return _DECLARED.get(endpoint, (Scope.ADMIN, False)) if endpoint else (Scope.ADMIN, False)


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    scopes: frozenset[Scope]
    key: ApiKey | None = None  # None while auth is off

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def sees(self) -> str | None:
        """The tenant whose jobs this caller may see; None means every tenant (admin)."""
        return None if self.admin else self.tenant

    def listing(self, tenant: str | None) -> str | None:
        """The tenant filter of a list: an admin's choice (None: all), else the caller's own."""
        if self.admin:
            return tenant
        if tenant not in (None, self.tenant):
            raise Forbidden("listing another tenant's jobs needs the 'admin' scope")
        return self.tenant


#: The caller while no API key exists: the single user of an embedded install.
OPEN = Caller(tenant="default", scopes=frozenset(Scope))
_ANONYMOUS = Caller(tenant="default", scopes=frozenset())


async def authorize(conn: HTTPConnection) -> Caller:
    needed, submits = declared(getattr(conn.scope.get("route"), "endpoint", None))
    if needed == "public":
        return _ANONYMOUS
    store = services(conn).keys
    if not await store.enabled():
        return OPEN
    key = await store.authenticate(_token(conn))
    if not key.allows(needed):
        raise Forbidden(
            f"this API key lacks the '{needed}' scope that {_route_name(conn)} needs"
            f" (it has: {', '.join(sorted(key.scopes))})"
        )
    if submits and key.rpm:
        await _charge(store, key)
    return Caller(key.tenant, key.scopes, key)


Principal = Annotated[Caller, Depends(authorize)]


def _token(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if conn.scope["type"] == "websocket":
        return conn.query_params.get("token")
    return None


def _route_name(conn: HTTPConnection) -> str:
    path = getattr(conn.scope.get("route"), "path", conn.url.path)
    return f"{conn.scope.get('method', 'WebSocket')} {path}"


async def _charge(store: KeyStore, key: ApiKey) -> None:
    rpm = key.rpm or 0
    wait = await store.limits.reserve(f"key:{key.id}", 1.0, rpm / 60.0, float(rpm), now())
    if wait > 0:
        raise RateLimited(
            f"this API key may submit {rpm} requests per minute and has used them;"
            f" try again in {math.ceil(wait)} s",
            retry_after=wait,
        )


def document_scopes(app: FastAPI) -> None:
    """Show each operation's scope in the OpenAPI schema (``x-genspool-scope``) along with the
    bearer scheme, so clients and tests can read what a route needs."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI; annotating it again is idempotent
        _annotate(schema, app)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _routes(app: FastAPI) -> Iterator[Any]:
    """Every route with its full path, through included routers (which FastAPI may keep as
    lazy branches rather than copying them into ``app.routes``)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return iter(flatten(app.routes) if flatten is not None else app.routes)


def _annotate(schema: dict[str, Any], app: FastAPI) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "gsk_… API key"}
    for route in _routes(app):
        operations = schema["paths"].get(getattr(route, "path_format", None) or "", {})
        needed, _ = declared(getattr(route, "endpoint", None))
        for method in getattr(route, "methods", None) or ():
            op = operations.get(method.lower())
            if op is not None:
                op["x-genspool-scope"] = str(needed)
                if needed != "public":
                    op["security"] = [{"bearer": []}]
