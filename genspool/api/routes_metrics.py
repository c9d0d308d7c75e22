"""``GET /metrics``: this process's Prometheus metrics (:mod:`genspool.metrics`).

Auth: the route needs the ``read`` scope, like ``/v1/models`` and ``/v1/breakers`` (model
health, no tenant's data), because every route but ``/healthz`` needs a key once one exists.
Prometheus sends one as a bearer token (``authorization: {credentials: <key>}`` in its scrape
config); while no key exists (auth off, loopback only) it scrapes without one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genspool.api.auth import requires
from genspool.api.deps import Services
from genspool.config import ModelConfig
from genspool.core.keys import Scope
from genspool.core.worker import Worker
from genspool.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["install", "router"]

router = APIRouter(tags=["ops"])


def install(services: Services, worker: Worker | None) -> Metrics:
    """The app's metrics, attached to its queue (and its worker, in ``genspool serve``)."""
    catalog = services.catalog
    names = [cfg.name for cfg in catalog]
    metrics = Metrics(
        services.queue,
        names,
        breakers={name: catalog.has_breaker(name) for name in names},
        shared=catalog.shared,
        shed=services.admission.shed,
        shedding=[cfg.name for cfg in catalog if _sheds(cfg)],
    )
    if worker is not None:
        metrics.watch(worker)
    return metrics


def _sheds(cfg: ModelConfig) -> bool:
    return cfg.admission.max_queue_depth is not None or cfg.admission.max_queue_age_s is not None


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
@requires(Scope.READ)
async def metrics(request: Request) -> Response:
    installed: Metrics = request.app.state.metrics
    return Response(await installed.render(), media_type=CONTENT_TYPE_LATEST)
