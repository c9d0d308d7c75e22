"""What a flagged drift report sets off: one log line (logger ``genspool.drift``) and a call of
every listener registered with :func:`on_flagged` (the metrics' gauge belongs here: a listener,
so this package imports no metrics library)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["on_flagged", "report_made"]

log = logging.getLogger("genspool.drift")


class DriftReport(Protocol):
    """What this module reads of a :class:`genspool.drift.report.DriftReport` (a protocol, so
    the report module may import this one and not the other way round)."""

    @property
    def model(self) -> str: ...
    @property
    def flagged(self) -> bool: ...
    @property
    def methods(self) -> Sequence[Any]: ...
    @property
    def baseline(self) -> Any: ...
    @property
    def current(self) -> Any: ...


Listener = Callable[[Any], None]
_LISTENERS: list[Listener] = []


def on_flagged(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with each flagged report made in this process; returns its removal."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def report_made(report: DriftReport) -> None:
    """The hook every report passes: a flagged one is logged and handed to the listeners."""
    if not report.flagged:
        return
    flagged = [m.name for m in report.methods if m.flagged]
    log.warning(
        "drift flagged for model %s by %s (baseline %d samples, current %d)",
        report.model, ", ".join(flagged), report.baseline.samples, report.current.samples,
        extra={"model": report.model, "drift_methods": flagged},
    )  # fmt: skip
    for listener in list(_LISTENERS):
        try:
            listener(report)
        except Exception:
            log.exception("a drift listener failed")
