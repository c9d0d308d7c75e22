"""Prometheus metrics of an API process (``GET /metrics``) or a worker (``--metrics-port``).

:class:`Metrics` owns one registry and attaches itself to a queue (``Queue.observer``): every
submit, lease, write and model call made through that queue in this process is counted there
(:mod:`genspool.metrics.series`); depth, age, breakers and in-flight work are read when scraped
(:mod:`genspool.metrics.scrape`); GPUs through NVML when there are any
(:mod:`genspool.metrics.gpu`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    start_http_server,
)

from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.metrics.exposition import Exposition
from genspool.metrics.gpu import gpu_collector
from genspool.metrics.scrape import (
    BuildInfo,
    DriftGauge,
    QueueSnapshot,
    ShedCollector,
    WorkerCollector,
)
from genspool.metrics.series import JobSeries, MetricsObserver
from genspool.resilience.shared import Shared

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "serve_worker_metrics"]


class Metrics:
    """The registry of one process, attached to ``queue``. With ``depth=True`` (an API) the
    queue's depth and age per model are series, read at scrape; a worker adds its own
    series with :meth:`watch`. ``shed``: the admission's refusal counts, shown for the models
    in ``shedding`` (those with an admission limit; None: all)."""

    def __init__(
        self,
        queue: Queue,
        models: Iterable[str],
        *,
        depth: bool = True,
        breakers: Mapping[str, bool] | None = None,
        shared: Shared | None = None,
        shed: Mapping[tuple[str, str], int] | None = None,
        shedding: Iterable[str] | None = None,
        gpu: bool = True,
    ) -> None:
        names = sorted(set(models))
        # No ``_created`` sample beside each counter: a third of the lines of a scrape, which
        # Prometheus drops anyway from the text format (process-wide, like the library's switch).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.exposition = Exposition(self.registry)
        self.series = JobSeries(self.registry, names)
        queue.observer = MetricsObserver(self.series)
        self.registry.register(BuildInfo(_version))
        self.drift = DriftGauge(names)
        self.registry.register(self.drift)
        self._detach = self.drift.attach()
        self.snapshot: QueueSnapshot | None = None
        if depth:
            self.snapshot = QueueSnapshot(queue, names, breakers=breakers, shared=shared)
            self.registry.register(self.snapshot)
        if shed is not None:
            shown = names if shedding is None else sorted(set(shedding))
            self.registry.register(ShedCollector(shed, shown))
        if gpu and (nvml := gpu_collector()) is not None:
            self.registry.register(nvml)

    def watch(self, worker: Worker) -> None:
        """Add ``worker``'s in-flight jobs, rate-limit waits and (unless the backend's are
        shown already) its breakers."""
        shown = self.snapshot is not None and self.snapshot.shared is not None
        self.registry.register(WorkerCollector(worker, breakers=not shown))

    async def aclose(self) -> None:
        """Stop the background reads of the backend and the drift listener."""
        self._detach()
        if self.snapshot is not None:
            await self.snapshot.aclose()

    async def render(self) -> bytes:
        """The exposition text, with the backend's figures as last read (:class:`QueueSnapshot`)."""
        if self.snapshot is not None:
            await self.snapshot.refresh()
        return self.exposition.render()


def _version() -> str:
    try:
        return importlib.metadata.version("genspool")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def serve_worker_metrics(queue: Queue, worker: Worker, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``worker``'s own registry on ``host:port`` from a thread (its counters, in-flight
    jobs, breakers, rate-limit waits, GPUs; depth is the API's); the port bound (0: any)."""
    metrics = Metrics(queue, [cfg.name for cfg in worker.registry], depth=False)
    metrics.watch(worker)
    server, _ = start_http_server(port, host, registry=metrics.registry)
    return int(server.server_port)
