"""What a drift report sets off: a flagged one logs a warning (logger ``genspool.drift``, with
the model and the methods as fields of a JSON log line); every report, flagged or not, is handed
to the listeners registered with :func:`on_report` (the metrics' gauge is one: a listener, so this
package imports no metrics library)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["on_report", "report_made"]

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


def on_report(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` with each report made in this process; returns its removal."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def report_made(report: DriftReport) -> None:
    """The hook every report passes: a flagged one is logged; all go to the listeners."""
    if report.flagged:
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
