"""What the views of long-running work (fan-outs, batches, pipeline runs, vector stores,
prompts, drift) share: a service the store may not keep, a list's cursor, progress and its
rate, a submission charged as the API charges it, and where to go after a form.

Not a view group (no ``router``): :mod:`~genspool.api.ui.batches`,
:mod:`~genspool.api.ui.pipelines` and the others import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from genspool.api.auth import Caller, _charge
from genspool.api.deps import services
from genspool.exceptions import ConfigError, InvalidRequest

__all__ = ["Progress", "Unavailable", "charge", "cursor", "go_to", "need", "root"]

T = TypeVar("T")
_CURSOR = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class Unavailable(ConfigError):
    """The deployment's store keeps none of these (a Redis or NATS server alone): as the
    API's routes answer, 501."""

    status_code = 501
    code = "unavailable"


def need(service: T | None, what: str) -> T:
    """``service``, or a 501 page saying why this deployment has no ``what``."""
    if service is None:
        raise Unavailable(
            f"this deployment keeps no {what}: its store is a Redis or NATS server alone; run"
            " with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL set"
            " to the Redis or NATS server (the queue)"
        )
    return service


def cursor(value: str | None, name: str = "after") -> str | None:
    """A list's cursor from the URL (the last id of the page before), refused when it cannot
    be one."""
    if not value:
        return None
    if not _CURSOR.match(value):
        raise InvalidRequest(f"{name}: not an id; use the page's next link", param=name)
    return value


def root(request: Request) -> str:
    """The UI's root path (``/ui``, or behind a proxy's prefix)."""
    return str(request.scope.get("root_path", ""))


def go_to(request: Request, path: str) -> Response:
    """After a form: to ``path`` of the UI; htmx follows ``HX-Redirect``, a plain form 303."""
    target = f"{root(request)}{path}"
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def charge(request: Request, caller: Caller) -> None:
    """Count a submission (a batch, a run) against the key's rate limit (``rpm``), as the
    API's submitting routes do: the UI is no way around it."""
    if caller.key is not None and caller.key.rpm:
        await _charge(services(request).keys, caller.key)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a batch or a run got: ended of ``total`` (None: not known yet), and the rate
    of ending since it started (per second; None before it started)."""

    succeeded: int
    failed: int
    total: int | None
    rate: float | None = None
    skipped: int = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def percent(self) -> float | None:
        return None if not self.total else min(100.0, 100.0 * self.ended / self.total)

    @classmethod
    def of(
        cls,
        succeeded: int,
        failed: int,
        total: int | None,
        *,
        started: float | None,
        ended_at: float | None,
        now: float,
        skipped: int = 0,
    ) -> Progress:
        stop = ended_at or now
        count = succeeded + failed + skipped
        rate = count / (stop - started) if started is not None and stop > started else None
        return cls(succeeded, failed, total, rate, skipped)
