"""Operations: the state of each model's circuit breaker (``GET /v1/breakers``).

Breakers live in the worker processes; each transition is written to the backend's KV
(namespace ``breakers``), which is what these routes read, so any API process can show them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter

from genspool.api.auth import requires
from genspool.api.deps import Services, Svc
from genspool.core.keys import Scope
from genspool.resilience import NAMESPACE

__all__ = ["breaker_states", "router"]

router = APIRouter(prefix="/v1", tags=["ops"])


async def breaker_states(svc: Services) -> dict[str, dict[str, Any]]:
    """Each model's breaker as last stored: ``closed`` until it first moves, ``disabled`` for
    a model without one; models served only by other processes are included."""
    stored = await svc.catalog.shared.kv.kv_list(NAMESPACE)
    states: dict[str, dict[str, Any]] = {}
    for cfg in svc.catalog:
        has = svc.catalog.has_breaker(cfg.name)
        states[cfg.name] = {"state": "closed" if has else "disabled", "opens_count": 0}
    for model, raw in sorted(stored.items()):
        states[model] = orjson.loads(raw)
    return states


@router.get("/breakers", summary="The circuit breaker of each model")
@requires(Scope.READ)  # model health, like /v1/models: no tenant's data
async def list_breakers(svc: Svc) -> dict[str, Any]:
    states = await breaker_states(svc)
    data = [{"object": "breaker", "model": m, **s} for m, s in states.items()]
    return {"object": "list", "data": data}
