"""A drift report: one model's current window of samples against its baseline window, by every
method of :mod:`genspool.drift.stats`, each flagged by the model's thresholds (``drift:
thresholds:`` in the models file, :class:`~genspool.config.DriftThresholds`).

:func:`compare` works on arrays (the unit tests and the bench call it); :func:`drift_report`
reads the samples from the store, runs :func:`compare` in a thread (a report of 2 x 50,000
samples is about half a second of CPU) and hands the report to :mod:`genspool.drift.alerts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from genspool.config import DriftThresholds, ModelConfig
from genspool.core.roles import DriftSample, DriftSamples
from genspool.drift import alerts, stats
from genspool.drift.windows import Span

__all__ = [
    "MAX_SAMPLES",
    "DriftReport",
    "Method",
    "Window",
    "WindowData",
    "compare",
    "drift_report",
]

#: Samples read of each window at most (the newest): the bench's 50,000 x 384.
MAX_SAMPLES = 50_000
_BINS = 20


@dataclass(frozen=True, slots=True)
class WindowData:
    """One window's samples as arrays: embeddings (rows), prompt and output lengths."""

    embeddings: npt.NDArray[np.float32]
    prompt_chars: npt.NDArray[np.int64]
    output_chars: npt.NDArray[np.int64]

    @classmethod
    def of(cls, samples: Sequence[DriftSample]) -> WindowData:
        if not samples:
            return cls(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        flat = np.frombuffer(b"".join(s.embedding for s in samples), dtype=np.float32)
        return cls(
            flat.reshape(len(samples), -1),
            np.fromiter((s.prompt_chars for s in samples), np.int64, len(samples)),
            np.fromiter((s.output_chars for s in samples), np.int64, len(samples)),
        )

    def __len__(self) -> int:
        return len(self.embeddings)


@dataclass(frozen=True, slots=True)
class Method:
    """One method's measure, the threshold it is held to, and whether it flags drift: a
    distance or share flags above its threshold, a p-value at or below it."""

    name: str
    value: float
    threshold: float
    flagged: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    start: float | None
    end: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class DriftReport:
    model: str
    embed_model: str
    baseline: Window
    current: Window
    #: ``drift``, ``no_drift``, or ``insufficient`` (a window has fewer than ``min_samples``).
    verdict: str
    methods: list[Method]
    charts: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return self.verdict == "drift"

    def to_dict(self) -> dict[str, Any]:
        return {"object": "drift.report", **asdict(self), "flagged": self.flagged}


def _above(name: str, value: float, threshold: float, **detail: Any) -> Method:
    return Method(name, value, threshold, value > threshold, detail)


def _at_most(name: str, value: float, threshold: float, **detail: Any) -> Method:
    return Method(name, value, threshold, value <= threshold, detail)


def compare(
    base: WindowData, cur: WindowData, t: DriftThresholds, *, seed: int = 0
) -> list[Method]:
    """Every method's verdict on ``cur`` against ``base`` (both with enough samples)."""
    a, b = base.embeddings, cur.embeddings
    m = stats.mmd(a, b, seed=seed)
    w = stats.wasserstein_share(a, b, threshold=t.wasserstein_dim, seed=seed)
    kp = stats.ks_2samp(base.prompt_chars, cur.prompt_chars)
    ko = stats.ks_2samp(base.output_chars, cur.output_chars)
    return [
        _above("centroid", stats.centroid_distance(a, b), t.centroid),
        _at_most("mmd", m.p_value, t.mmd_p, mmd2=m.mmd2, bandwidth=m.bandwidth,
                 permutations=m.permutations, rows=list(m.rows)),
        _above("wasserstein", w.share, t.wasserstein_share, dimension_threshold=w.threshold,
               mean=w.mean, max=w.max),
        _at_most("ks_prompt_chars", kp.p_value, t.ks_p, statistic=kp.statistic),
        _at_most("ks_output_chars", ko.p_value, t.ks_p, statistic=ko.statistic),
    ]  # fmt: skip


def _histogram(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> dict[str, list[float]]:
    edges = np.histogram_bin_edges(np.concatenate([a, b]).astype(np.float64), bins=_BINS)
    return {
        "edges": edges.tolist(),
        "baseline": (np.histogram(a, edges)[0] / max(len(a), 1)).tolist(),
        "current": (np.histogram(b, edges)[0] / max(len(b), 1)).tolist(),
    }


def charts(base: WindowData, cur: WindowData) -> dict[str, Any]:
    """What the HTML page draws: each length's histograms (shares of each window)."""
    return {
        "prompt_chars": _histogram(base.prompt_chars, cur.prompt_chars),
        "output_chars": _histogram(base.output_chars, cur.output_chars),
    }


def make_report(
    cfg: ModelConfig, base: WindowData, cur: WindowData, spans: tuple[Span | None, Span | None]
) -> DriftReport:
    t = cfg.drift.thresholds
    enough = len(base) >= t.min_samples and len(cur) >= t.min_samples
    enough = enough and base.embeddings.shape[1] == cur.embeddings.shape[1]
    methods = compare(base, cur, t) if enough else []
    verdict = (
        "insufficient" if not enough else "drift" if any(m.flagged for m in methods) else "no_drift"
    )
    windows = [Window(s.start if s else None, s.end if s else None, len(d))
               for s, d in zip(spans, (base, cur), strict=True)]  # fmt: skip
    report = DriftReport(
        cfg.name, cfg.drift.embed_model, windows[0], windows[1], verdict, methods,
        charts(base, cur) if enough else {},
    )  # fmt: skip
    alerts.report_made(report)
    return report


async def _window(store: DriftSamples, cfg: ModelConfig, span: Span, limit: int) -> WindowData:
    found = await store.drift_list(cfg.name, span.start, span.end, limit)
    return WindowData.of([s for s in found if s.embed_model == cfg.drift.embed_model])


async def drift_report(
    store: DriftSamples,
    cfg: ModelConfig,
    baseline: Span,
    current: Span,
    *,
    limit: int = MAX_SAMPLES,
) -> DriftReport:
    """The report of ``cfg``'s model over the two windows (only samples embedded by its
    current ``embed_model`` count: vectors of two models are not comparable)."""
    base = await _window(store, cfg, baseline, limit)
    cur = await _window(store, cfg, current, limit)
    return await asyncio.to_thread(make_report, cfg, base, cur, (baseline, current))
