"""Series computed when scraped: queue depth and age, breakers, shed requests, in-flight work.

The backend is read by :class:`QueueSnapshot`: the first scrape waits for that read; after it,
a background task re-reads every ``ttl_s`` (1 s, or five times as long as the last read took,
whichever is longer) for as long as someone keeps scraping (``idle_s``, a minute), so a scrape
renders the last figures at once instead of waiting for a depth read (a tenth of a second and up
with a million jobs stored). The collectors are synchronous; concurrent scrapes share one read.
The other collectors read counts that their owners keep in memory
(:class:`~genspool.api.admission.Admission`, the rate-limit layers, the worker's held jobs), so a
scrape costs them nothing on the paths they count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genspool.core.presence import WorkerSeen, live_workers
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.metrics.series import OTHER
from genspool.resilience import NAMESPACE, BreakerLayer, State
from genspool.resilience.ratelimit import RateLimit
from genspool.resilience.shared import Shared

__all__ = [
    "BREAKER_STATES",
    "BuildInfo",
    "DriftGauge",
    "QueueSnapshot",
    "ShedCollector",
    "WorkerCollector",
]

log = logging.getLogger("genspool.metrics")

BREAKER_STATES = (*(s.value for s in State), "disabled")
_ACTIVE = ("queued", "retrying", "running")


class QueueSnapshot(Collector):
    """Depth per model and status, the oldest waiting job's age, and each breaker's state, as
    last read from the backend (every configured model is shown, at zero when idle)."""

    def __init__(
        self,
        queue: Queue,
        models: Iterable[str],
        *,
        breakers: Mapping[str, bool] | None = None,
        shared: Shared | None = None,
        ttl_s: float = 1.0,
        idle_s: float = 60.0,
    ) -> None:
        """``breakers``: by model, whether it has a breaker; ``shared``: where workers store
        their breakers' states (None: no breaker series); ``ttl_s``: how often to re-read while
        scraped (0: at every scrape, waited for); ``idle_s``: stop re-reading after that long
        without a scrape."""
        self.queue, self.models, self.ttl_s, self.idle_s = queue, sorted(models), ttl_s, idle_s
        self.breakers, self.shared = dict(breakers or {}), shared
        self._depth: dict[str, dict[str, int]] = {}
        self._oldest: dict[str, float] = {}
        self._states: dict[str, str] = {}
        self._workers: list[WorkerSeen] = []
        self._began = self._read_at = -float("inf")
        self._interval = ttl_s
        self._scraped_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Make the figures current for a scrape: wait for a read when none is recent enough
        to show (the first scrape, one after an idle spell, or ``ttl_s`` 0); otherwise keep
        the background re-reads going and return at once."""
        now = self._scraped_at = time.monotonic()
        if self.ttl_s <= 0 or now - self._read_at > 2 * self._interval + self.ttl_s:
            await self._read(since=now)
        if self.ttl_s > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._rereading(), name="genspool-metrics-depth")

    async def aclose(self) -> None:
        """Stop the background re-reads."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _rereading(self) -> None:
        while self.ttl_s > 0 and time.monotonic() - self._scraped_at < self.idle_s:
            await asyncio.sleep(self._interval)
            try:
                await self._read(since=time.monotonic())
            except Exception as exc:  # keep the last figures; the backend may come back
                log.warning("could not read the queue depth for /metrics: %s", exc)

    async def _read(self, since: float) -> None:
        """Read the backend, unless a read that began after ``since`` has ended meanwhile
        (concurrent scrapes join one read)."""
        async with self._lock:
            if self._began >= since:
                return
            began = time.monotonic()
            depth = await self.queue.depth()
            oldest = await self.queue.oldest_waiting()
            states = await self._breaker_states(self.shared) if self.shared is not None else {}
            q = self.queue
            workers = await live_workers(q.storage.kv, q.clock(), q.lease_s)
            self._depth, self._oldest, self._states = depth, oldest, states
            self._workers = workers
            self._began, self._read_at = began, time.monotonic()
            self._interval = max(self.ttl_s, 5 * (self._read_at - began))

    async def _breaker_states(self, shared: Shared) -> dict[str, str]:
        states = {m: "closed" if on else "disabled" for m, on in self.breakers.items()}
        for model, raw in (await shared.kv.kv_list(NAMESPACE)).items():
            if model in states and states[model] != "disabled":
                try:
                    states[model] = str(orjson.loads(raw)["state"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
        return states

    def collect(self) -> Iterator[Metric]:
        known = set(self.models)
        depth = GaugeMetricFamily(
            "genspool_queue_depth", "Jobs queued, retrying or running.", labels=["model", "status"]
        )
        totals: dict[tuple[str, str], int] = {(m, s): 0 for m in self.models for s in _ACTIVE}
        for model, counts in self._depth.items():
            label = model if model in known else OTHER
            for status, n in counts.items():
                if status in _ACTIVE:
                    key = (label, status)
                    totals[key] = totals.get(key, 0) + n
        for (model, status), n in sorted(totals.items()):
            depth.add_metric([model, status], n)
        yield depth
        yield self._ages(known)
        workers = GaugeMetricFamily(
            "genspool_workers", "Live workers serving the model (their last heartbeat).",
            labels=["model"],
        )  # fmt: skip
        for model in self.models:
            workers.add_metric([model], sum(model in w.models for w in self._workers))
        yield workers
        if self.shared is not None:
            yield _breaker_family(self._states)

    def _ages(self, known: set[str]) -> GaugeMetricFamily:
        age = GaugeMetricFamily(
            "genspool_queue_oldest_waiting_age_seconds",
            "Age of the oldest queued or retrying job (0: none).",
            labels=["model"],
        )
        now = self.queue.clock()
        oldest: dict[str, float] = dict.fromkeys(self.models, now)
        for model, at in self._oldest.items():
            label = model if model in known else OTHER
            oldest[label] = min(oldest.get(label, now), at)
        for model, at in sorted(oldest.items()):
            age.add_metric([model], max(now - at, 0.0))
        return age


def _breaker_family(states: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "genspool_breaker_state",
        "1 for the state each model's circuit breaker is in, 0 for the others.",
        labels=["model", "state"],
    )
    for model, current in sorted(states.items()):
        for state in BREAKER_STATES:
            family.add_metric([model, state], 1.0 if state == current else 0.0)
    return family


class ShedCollector(Collector):
    """Submissions refused at the door for load, by model and reason (``Admission.shed``)."""

    REASONS = ("queue_depth", "queue_age")

    def __init__(self, shed: Mapping[tuple[str, str], int], models: Iterable[str]) -> None:
        self.shed, self.models = shed, sorted(models)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "genspool_shed_requests", "Submissions refused for load.", labels=["model", "reason"]
        )
        for model in self.models:
            for reason in self.REASONS:
                family.add_metric([model, reason], self.shed.get((model, reason), 0))
        yield family


class WorkerCollector(Collector):
    """A worker's jobs in flight, its breakers and its rate-limit waits, by model. May be
    called from another thread (``start_http_server``): it only reads."""

    def __init__(self, worker: Worker, *, breakers: bool = True) -> None:
        """``breakers=False`` where the API's snapshot shows them (one process, one family)."""
        self.worker, self.breakers = worker, breakers

    def collect(self) -> Iterator[Metric]:
        names = [cfg.name for cfg in self.worker.models]
        in_flight = GaugeMetricFamily(
            "genspool_worker_in_flight", "Jobs leased by this worker, not yet ended.",
            labels=["model"],
        )  # fmt: skip
        counts = dict.fromkeys(names, 0)
        for job in self.worker.held.copy().values():
            if job.model in counts:
                counts[job.model] += 1
        for model in names:
            in_flight.add_metric([model], counts[model])
        yield in_flight
        yield from self._layers(names)

    def _layers(self, names: list[str]) -> Iterator[Metric]:
        waits = CounterMetricFamily(
            "genspool_ratelimit_waits", "Calls that waited for rate-limit budget.",
            labels=["model", "limit"],
        )  # fmt: skip
        waited = CounterMetricFamily(
            "genspool_ratelimit_wait_seconds", "Time waited for rate-limit budget.",
            labels=["model", "limit"],
        )  # fmt: skip
        states: dict[str, str] = {}
        for model in names:
            for layer in self._stack(model):
                if isinstance(layer, RateLimit):
                    for limit in ("rpm", "tpm"):
                        waits.add_metric([model, limit], layer.waits[limit])
                        waited.add_metric([model, limit], layer.waited_s.get(limit, 0.0))
                elif isinstance(layer, BreakerLayer):
                    states[model] = layer.breaker.state.value
        yield waits
        yield waited
        if self.breakers:
            yield _breaker_family(states)

    def _stack(self, model: str) -> Iterator[Any]:
        """The layers of ``model``'s provider stack, outermost first (built ones only)."""
        if not self.worker.ready.is_set():
            return
        layer: Any = self.worker.registry.provider(model)
        while layer is not None:
            yield layer
            layer = getattr(layer, "inner", None)


class BuildInfo(Collector):
    """``genspool_build_info{version, python}`` = 1."""

    def __init__(self, version: Callable[[], str]) -> None:
        self.version = version

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "genspool_build_info", "The running genspool.", labels=["version", "python"]
        )
        family.add_metric([self.version(), platform.python_version()], 1.0)
        yield family


class DriftGauge(Collector):
    """The last drift verdict of each model this process made a report of (on request or by
    ``drift.check_every_s``): ``genspool_drift_flagged`` 1 or 0, and reports by verdict. Fed
    by :func:`genspool.drift.alerts.on_report` (see :meth:`attach`)."""

    VERDICTS = ("drift", "no_drift", "insufficient")

    def __init__(self, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self.flagged: dict[str, bool] = {}
        self.reports: dict[tuple[str, str], int] = {}

    def attach(self) -> Callable[[], None]:
        """Listen to this process's reports; returns the detach."""
        from genspool.drift import alerts

        return alerts.on_report(self.saw)

    def saw(self, report: Any) -> None:
        model = report.model if report.model in self.models else OTHER
        self.flagged[model] = bool(report.flagged)
        key = (model, str(report.verdict))
        self.reports[key] = self.reports.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        flagged = GaugeMetricFamily(
            "genspool_drift_flagged", "1 if the model's last drift report flagged drift.",
            labels=["model"],
        )  # fmt: skip
        for model, on in sorted(self.flagged.items()):
            flagged.add_metric([model], 1.0 if on else 0.0)
        yield flagged
        reports = CounterMetricFamily(
            "genspool_drift_reports", "Drift reports made, by verdict.", labels=["model", "verdict"]
        )
        for (model, verdict), n in sorted(self.reports.items()):
            reports.add_metric([model, verdict], n)
        yield reports
