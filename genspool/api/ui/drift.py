"""``/ui/drift``: the drift report of a sampled model (``drift: sample_rate`` in the models
file), its current window against its baseline window, both given as ``GET /v1/drift`` takes
them (epoch seconds, ISO 8601, ``now``, ``-7d``; by default the last day against the week
before it).

The same report as the API's (:func:`~genspool.drift.report.drift_report`), with the charts of
:func:`~genspool.drift.html.report_figures` painted by the UI's stylesheet (by class: the
Content-Security-Policy allows no inline style). ``read`` scope, as the API's: samples are per
model, no tenant's data is shown.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.responses import Response

from genspool.api.deps import Services, services
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.config import ModelConfig
from genspool.core.keys import Scope
from genspool.drift.html import report_figures
from genspool.drift.report import MAX_SAMPLES, drift_report
from genspool.drift.windows import DEFAULT_BASELINE, DEFAULT_CURRENT, spans
from genspool.exceptions import BackendError, InvalidRequest, UnknownModel

__all__ = ["WINDOW_FIELDS", "router", "sampled"]

router = APIRouter(include_in_schema=False)

WINDOW_FIELDS = ("baseline_start", "baseline_end", "current_start", "current_end")
_DEFAULTS = dict(zip(WINDOW_FIELDS, (*DEFAULT_BASELINE, *DEFAULT_CURRENT), strict=True))


def sampled(svc: Services) -> list[ModelConfig]:
    """The served models whose answers are sampled for drift."""
    return sorted((c for c in svc.catalog if c.drift.sample_rate > 0), key=lambda c: c.name)


def _config(svc: Services, model: str) -> ModelConfig:
    try:
        return svc.catalog.config(model)
    except UnknownModel as exc:
        raise InvalidRequest(f"model: {exc.message}", param="model") from None


@router.get("/drift")
@ui_requires(Scope.READ)
async def drift(request: Request, caller: UiCaller, model: str | None = None) -> Response:
    svc = services(request)
    store = svc.queue.storage.drift
    if store is None:
        raise BackendError("this deployment's store keeps no drift samples (use a SQL store)")
    models = sampled(svc)
    given = {f: (request.query_params.get(f) or "").strip() for f in WINDOW_FIELDS}
    chosen = model or (models[0].name if models else None)
    report, figures, least = None, Markup(""), 0
    if chosen is not None:
        cfg = _config(svc, chosen)
        baseline, current = spans(
            svc.queue.clock(),
            (given["baseline_start"] or None, given["baseline_end"] or None),
            (given["current_start"] or None, given["current_end"] or None),
        )
        made = await drift_report(store, cfg, baseline, current, limit=MAX_SAMPLES)
        report, least = made.to_dict(), cfg.drift.thresholds.min_samples
        figures = Markup(report_figures(report, classes=True))  # its text escaped by html.py
    return await render(
        request, "drift.html", caller, models=models, model=chosen, report=report,
        figures=figures, windows=given, defaults=_DEFAULTS, min_samples=least,
    )  # fmt: skip
