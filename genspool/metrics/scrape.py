"""Series computed when scraped: queue depth and age, breakers, shed requests, in-flight work.

The backend is read by :meth:`QueueSnapshot.refresh`, awaited by the scrape route before it
renders (collectors are synchronous), at most once a ``ttl_s`` (1 s) however many scrapers
come, and concurrent scrapes share one read. The other collectors read counts that their
owners keep in memory (:class:`~genspool.api.admission.Admission`, the rate-limit layers, the
worker's held jobs), so a scrape costs them nothing on the paths they count.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.metrics.series import OTHER
from genspool.resilience import NAMESPACE, BreakerLayer, State
from genspool.resilience.ratelimit import RateLimit
from genspool.resilience.shared import Shared

__all__ = [
    "BREAKER_STATES",
    "BuildInfo",
    "QueueSnapshot",
    "ShedCollector",
    "WorkerCollector",
]

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
    ) -> None:
        """``breakers``: by model, whether it has a breaker; ``shared``: where workers store
        their breakers' states (None: no breaker series)."""
        self.queue, self.models, self.ttl_s = queue, sorted(models), ttl_s
        self.breakers, self.shared = dict(breakers or {}), shared
        self._depth: dict[str, dict[str, int]] = {}
        self._oldest: dict[str, float] = {}
        self._states: dict[str, str] = {}
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the backend unless a read is younger than ``ttl_s`` (or under way: join it)."""
        if time.monotonic() - self._read_at < self.ttl_s:
            return
        async with self._lock:
            if time.monotonic() - self._read_at < self.ttl_s:
                return
            self._depth = await self.queue.depth()
            self._oldest = await self.queue.oldest_waiting()
            if self.shared is not None:
                self._states = await self._breaker_states(self.shared)
            self._read_at = time.monotonic()

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
