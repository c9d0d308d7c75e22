"""The series a process updates as jobs move, and the observer that updates them.

Every series is in one :class:`~prometheus_client.CollectorRegistry` per app or worker (never
the global default: tests run many apps in one process). Names follow Prometheus: the
``genspool_`` prefix, seconds, ``_total`` on counters.

**Bounded labels only.** ``model`` is one of the configured models: a job of any other name
(which the API refuses at the door anyway) is counted under ``other``, so no request-supplied
string ever becomes a series. ``status``, ``reason``, ``outcome`` and ``direction`` take values
from fixed sets; no tenant, key or job id is ever a label. Each configured model's counters exist
from the start (a scrape shows zeros rather than nothing); its histograms from its first job.
So the series count is bounded by the configuration, whatever the requests name.

Each transition is counted by the process that wrote it (the API counts submissions and the
cancels it makes; a worker counts leases, calls and outcomes; ``genspool serve`` both):
Prometheus sums across instances, with no shared multiprocess directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from genspool.core.decode_rate import completion_tokens
from genspool.core.job import TERMINAL, Job, JobStatus
from genspool.core.observe import Observer, Timed

__all__ = ["OTHER", "RETRY_REASONS", "JobSeries", "MetricsObserver", "retry_reason"]

#: The label of a model that is not configured here (never the name itself).
OTHER = "other"
#: Error codes (genspool.exceptions, or a Python exception's name) to a retry reason.
_REASONS = {
    "model_timeout": "timeout",
    "timeout": "timeout",
    "TimeoutError": "timeout",
    "model_rate_limited": "rate_limited",
    "rate_limit_exceeded": "rate_limited",
    "circuit_open": "circuit_open",
    "connection_error": "connection",
    "backend_unavailable": "connection",
    "model_error": "model_error",
}
RETRY_REASONS = (*sorted(set(_REASONS.values())), "lease_expired", "other")
_FINISHED = tuple(s.value for s in sorted(TERMINAL))
#: Seconds, from an interactive call to an hour-long wait in a deep queue. Few buckets: a
#: histogram renders len + 3 lines per model at every scrape (100 models: a line costs ~4 us).
_WAIT_BUCKETS = (0.05, 0.25, 1, 4, 15, 60, 300, 1800)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024)


def retry_reason(error: Mapping[str, Any] | None) -> str:
    """The fixed reason for a job's error: its code mapped, never the code itself."""
    if not error:
        return "other"
    message = str(error.get("message", ""))
    if message.startswith("lease expired"):
        return "lease_expired"
    return _REASONS.get(str(error.get("code")), "other")


class JobSeries:
    """The jobs' counters and histograms, labelled by configured model."""

    def __init__(self, registry: CollectorRegistry, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        m = ("model",)
        r = registry
        self.submitted = Counter("genspool_jobs_submitted", "Jobs stored.", m, registry=r)
        self.finished = Counter(
            "genspool_jobs_finished", "Jobs that ended, by status.", (*m, "status"), registry=r
        )
        self.retries = Counter(
            "genspool_job_retries", "Attempts to be retried, by reason.", (*m, "reason"),
            registry=r,
        )  # fmt: skip
        self.dead = Counter("genspool_dead_letters", "Jobs dead-lettered.", m, registry=r)
        self.queue_wait = _histogram(r, "genspool_queue_wait_seconds", "Due to leased.", m)
        self.run = _histogram(r, "genspool_job_run_seconds", "Last lease to end.", m)
        self.end_to_end = _histogram(r, "genspool_job_end_to_end_seconds", "Submitted to ended.", m)
        self.call = _histogram(r, "genspool_model_call_seconds", "A model call (any outcome).", m)
        self.calls = Counter(
            "genspool_model_calls", "Jobs' model calls, by outcome.", (*m, "outcome"), registry=r
        )
        self.batch = Histogram(
            "genspool_batch_size", "Jobs per model call.", m, buckets=_BATCH_BUCKETS, registry=r
        )
        self.tokens = Counter(
            "genspool_tokens", "Tokens in and out.", (*m, "direction"), registry=r
        )
        for model in sorted(self.models | {OTHER}):
            self._create(model)

    def _create(self, model: str) -> None:
        """The counters of ``model`` at zero, so that a rate starts at its first job. The
        histograms (11 series each) appear with their first observation: rendering them for
        every idle model cost ~1 ms a model at each scrape."""
        for metric in (self.submitted, self.dead):
            metric.labels(model)
        for status in _FINISHED:
            self.finished.labels(model, status)
        for direction in ("input", "output"):
            self.tokens.labels(model, direction)

    def label(self, model: str) -> str:
        return model if model in self.models else OTHER


def _histogram(
    registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str]
) -> Histogram:
    return Histogram(name, doc, labels, buckets=_WAIT_BUCKETS, registry=registry)


class MetricsObserver(Observer):
    """Turns the core's hooks into series updates (cheap: a few dict lookups a job)."""

    def __init__(self, series: JobSeries) -> None:
        self.s = series

    def submitted(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.s.submitted.labels(self.s.label(job.model)).inc()

    def leased(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.started_at is not None:
                due = max(job.created_at, job.available_at)
                wait = max(job.started_at - due, 0.0)
                self.s.queue_wait.labels(self.s.label(job.model)).observe(wait)

    def written(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            model = self.s.label(job.model)
            if job.status is JobStatus.RETRYING or (
                job.status is JobStatus.QUEUED and job.error is not None
            ):  # queued with an error: a call refused (breaker, rate limit), not counted
                self.s.retries.labels(model, retry_reason(job.error)).inc()
            elif job.terminal:
                self._ended(model, job)

    def _ended(self, model: str, job: Job) -> None:
        self.s.finished.labels(model, job.status.value).inc()
        if job.status is JobStatus.FAILED:
            self.s.dead.labels(model).inc()
        end = job.finished_at
        if end is None:
            return
        self.s.end_to_end.labels(model).observe(max(end - job.created_at, 0.0))
        if job.started_at is not None and job.status is not JobStatus.EXPIRED:
            self.s.run.labels(model).observe(max(end - job.started_at, 0.0))

    def started(self, model: str, jobs: Sequence[Job]) -> None:
        self.s.batch.labels(self.s.label(model)).observe(len(jobs))

    def settled(
        self,
        model: str,
        outcomes: Sequence[tuple[Job, Any]],
        runs: Mapping[str, Timed],
        now: float,
    ) -> None:
        label = self.s.label(model)
        for job, outcome in outcomes:
            run = runs.get(job.id)
            if run is not None:
                self.s.calls.labels(label, _outcome(outcome)).inc()
                self.s.call.labels(label).observe(max(now - run.started, 0.0))
            if isinstance(outcome, dict):
                self._tokens(label, outcome)

    def _tokens(self, model: str, body: dict[str, Any]) -> None:
        usage = body.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(prompt, int) and prompt > 0:
            self.s.tokens.labels(model, "input").inc(prompt)
        out = completion_tokens(body)
        if out is not None and out > 0:
            self.s.tokens.labels(model, "output").inc(out)


def _outcome(outcome: object) -> str:
    if isinstance(outcome, dict):
        return "ok"
    # The worker's own markers for a call it stopped: handed back, or the job cancelled.
    if type(outcome).__name__ in ("_HandedBack", "_Cancelled"):
        return "cancelled"
    return "error"
