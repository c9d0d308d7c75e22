"""Drift reports (``GET /v1/drift``): one model's current window of sampled answers against its
baseline window (:mod:`genspool.drift`). Read scope, as model health is (``/v1/breakers``):
samples are per model, no tenant's data is shown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from genspool.api.auth import requires
from genspool.api.deps import Svc
from genspool.core.keys import Scope
from genspool.drift.report import MAX_SAMPLES, drift_report
from genspool.drift.windows import spans
from genspool.exceptions import BackendError, InvalidRequest, UnknownModel

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["ops"])
When = Annotated[
    str | None,
    Query(description="Epoch seconds, an ISO 8601 time, 'now', or before now: -7d, -24h, -30m."),
]


@router.get("/drift", summary="A drift report of one model: current window against baseline")
@requires(Scope.READ)
async def get_drift(
    svc: Svc,
    model: Annotated[str, Query(min_length=1, description="The model whose samples to compare.")],
    baseline_start: When = None,
    baseline_end: When = None,
    current_start: When = None,
    current_end: When = None,
    limit: Annotated[int, Query(ge=2, le=MAX_SAMPLES, description="Samples per window.")] = (
        MAX_SAMPLES
    ),
) -> dict[str, Any]:
    try:
        cfg = svc.catalog.config(model)
    except UnknownModel as exc:
        raise InvalidRequest(f"model: {exc.message}", param="model") from None
    store = svc.queue.storage.drift
    if store is None:
        raise BackendError("this deployment's store keeps no drift samples (use a SQL store)")
    baseline, current = spans(
        svc.queue.clock(), (baseline_start, baseline_end), (current_start, current_end)
    )
    report = await drift_report(store, cfg, baseline, current, limit=limit)
    return report.to_dict()
