"""Routes: rules that choose a fan-out's targets by matching an event, EventBridge-style.

A route is a name, an event ``pattern`` (:mod:`genspool.core.patterns`, EventBridge semantics)
and its ``targets``: requests whose bodies may template the event (``{{event.detail.lang}}``,
:mod:`genspool.fanout.template`). Routes come from the models file (``routes:``, fixed for the
life of the process) and from ``PUT /v1/routes/{name}`` (kept by the backend's
:class:`~genspool.core.roles.RouteStore`, shared by every process). An invalid pattern is refused
where it is loaded, with the path of the offending part.

:class:`RouteBook` keeps every route compiled: a pattern is compiled once when its route is
loaded, never per event. It reads the store's revision at most every ``refresh_s`` and reloads
the stored routes only when it moved, so a route written by another API process is used here
within that time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genspool.config import section
from genspool.core.patterns import Matcher, PatternError, PatternIndex, compile_pattern
from genspool.core.roles import RouteStore
from genspool.exceptions import ConfigError, Conflict, InvalidRequest, NotFound
from genspool.fanout.spec import MAX_DEADLINE_S, PlannedBranch
from genspool.fanout.template import TemplateError, render

__all__ = ["Route", "RouteBook", "Target", "load_routes"]

_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    url: str = "/v1/chat/completions"
    body: dict[str, Any] = Field(description="A request body; {{event.…}} takes the event's.")
    timeout_s: float | None = Field(None, gt=0, le=MAX_DEADLINE_S)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    description: str = ""
    pattern: dict[str, Any]
    targets: list[Target] = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _valid(cls, pattern: dict[str, Any]) -> dict[str, Any]:
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise ValueError(f"invalid pattern at {exc}") from exc
        return pattern

    def public(self, *, source: str) -> dict[str, Any]:
        return {"object": "route", **self.model_dump(), "source": source}

    def branches(self, event: dict[str, Any]) -> list[PlannedBranch]:
        """The route's targets for ``event``, their bodies rendered; one branch each, named
        ``{route}.{target}``."""
        out = []
        for t in self.targets:
            try:
                body = render(t.body, {"event": event})
            except TemplateError as exc:
                raise InvalidRequest(
                    f"route {self.name}, target {t.name}: the event has no value for {exc}",
                    param="event",
                ) from exc
            out.append(
                PlannedBranch(
                    name=f"{self.name}.{t.name}", url=t.url, body=body, timeout_s=t.timeout_s,
                    route=self.name,
                )
            )  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class _Compiled:
    route: Route
    match: Matcher
    source: str  # "config" or "api"


def load_routes(entries: list[Any], source: str = "the models file") -> list[Route]:
    """The ``routes:`` of a models file, checked; a :class:`ConfigError` names the route and
    what is wrong with it (an invalid pattern with the path of the offending part)."""
    routes = [section(Route, e, f"routes[{i}]", source) for i, e in enumerate(entries)]
    names = [r.name for r in routes]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{source}: route(s) {dupes} declared more than once")
    return routes


class RouteBook:
    def __init__(
        self, store: RouteStore | None, fixed: list[Route] | None = None, *, refresh_s: float = 1.0
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._fixed = {
            r.name: _Compiled(r, compile_pattern(r.pattern), "config") for r in fixed or []
        }
        self._stored: dict[str, _Compiled] = {}
        self._docs: dict[str, bytes] = {}
        self._revision = -1
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._index = self._indexed()

    def _indexed(self) -> PatternIndex[str]:
        """Every route's matcher in one index (the fast path for many routes), by name."""
        merged = {**self._stored, **self._fixed}
        index: PatternIndex[str] = PatternIndex()
        for name in sorted(merged):
            index.add(name, merged[name].match)
        return index

    async def routes(self) -> list[tuple[Route, str]]:
        """Every route with its source (``config`` or ``api``), by name."""
        await self._refresh()
        merged = {**self._stored, **self._fixed}
        return [(merged[n].route, merged[n].source) for n in sorted(merged)]

    async def get(self, name: str) -> tuple[Route, str]:
        await self._refresh()
        found = self._fixed.get(name) or self._stored.get(name)
        if found is None:
            raise NotFound(f"no route {name!r}")
        return found.route, found.source

    async def match(self, event: dict[str, Any]) -> list[Route]:
        """The routes whose pattern matches ``event``, by name."""
        await self._refresh()
        merged = {**self._stored, **self._fixed}
        return [merged[n].route for n in self._index.match(event)]

    async def put(self, route: Route) -> bool:
        """Store ``route``; whether it is new. A route of the models file cannot be replaced."""
        store = self._writable(route.name)
        created = await store.route_get(route.name) is None
        await store.route_put(route.name, orjson.dumps(route.model_dump()))
        self._checked = 0.0  # read it back at the next use
        return created

    async def delete(self, name: str) -> None:
        store = self._writable(name)
        if not await store.route_delete(name):
            raise NotFound(f"no route {name!r}")
        self._checked = 0.0

    def _writable(self, name: str) -> RouteStore:
        if name in self._fixed:
            raise Conflict(f"route {name!r} is defined in the models file; change it there")
        if self.store is None:
            raise Conflict("this deployment keeps no routes of its own (no route store)")
        return self.store

    async def _refresh(self) -> None:
        if self.store is None or time.monotonic() - self._checked < self.refresh_s:
            return
        async with self._lock:
            if time.monotonic() - self._checked < self.refresh_s:
                return
            revision = await self.store.routes_revision()
            if revision != self._revision:
                docs = await self.store.route_list()
                compiled = {n: self._compiled(n, d) for n, d in docs.items()}
                self._stored = {n: c for n, c in compiled.items() if c is not None}
                self._revision = revision
                self._index = self._indexed()
            self._checked = time.monotonic()

    def _compiled(self, name: str, doc: bytes) -> _Compiled | None:
        """A stored route, compiled once per version of its document."""
        known = self._stored.get(name)
        if known is not None and self._docs.get(name) == doc:
            return known
        try:
            route = Route.model_validate(orjson.loads(doc))
        except (ValueError, ValidationError):
            return None  # written by a newer version of genspool: not ours to use
        self._docs[name] = doc
        return _Compiled(route, compile_pattern(route.pattern), "api")
