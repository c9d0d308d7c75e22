"""Drift of models' answers: samples taken as chat jobs succeed, and reports comparing a
current window of them with a baseline window.

Modules: :mod:`.stats` (the statistics, numpy alone), :mod:`.report` (a report and its
verdicts from the thresholds of the models file), :mod:`.windows` (the time windows a report
compares), :mod:`.sampler` (the hook on the queue that samples jobs and embeds their outputs
through the queue), :mod:`.alerts` (what a flagged report sets off), :mod:`.html` (a report as
one self-contained HTML page with inline SVG charts).
"""

from genspool.drift.report import DriftReport, Method, compare, drift_report
from genspool.drift.sampler import DRIFT_META, DriftSampler, drift_sampler_of

__all__ = [
    "DRIFT_META",
    "DriftReport",
    "DriftSampler",
    "Method",
    "compare",
    "drift_report",
    "drift_sampler_of",
]
