"""Prometheus metrics of an API process (``GET /metrics``) or a worker (``--metrics-port``).

:class:`Metrics` owns one registry and attaches itself to a queue (``Queue.observer``): every
submit, lease, write and model call made through that queue in this process is counted there
(:mod:`genspool.metrics.series`); depth, age, breakers and in-flight work are read when scraped
(:mod:`genspool.metrics.scrape`); GPUs through NVML when there are any
(:mod:`genspool.metrics.gpu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
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
    in ``shedding`` (those with an admission limit; None: all).

    **Rendering.** While a rendering costs less than ``inline_s`` (10 ms: a few models, or idle
    ones) every scrape renders afresh. Past that (100 busy models: ~8,000 lines, tens of ms),
    the text is rendered ahead in a thread every ``fresh_s`` (1 s) for as long as someone keeps
    scraping (``idle_s``), and a scrape answers the latest at once: its figures are then up to
    ``fresh_s`` old, as the backend's already are, and the scrape does not wait for the render.
    """

    #: Renders cheaper than this are done at each scrape, on the event loop.
    inline_s = 0.01
    #: How old a text rendered ahead may be; 0: render at each scrape.
    fresh_s = 1.0
    #: Stop rendering ahead after this long without a scrape.
    idle_s = 60.0

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
        self._text = b""
        self._text_at = -float("inf")
        self._took = 0.0
        self._scraped_at = 0.0
        self._rendering = asyncio.Lock()
        self._ahead: asyncio.Task[None] | None = None

    def watch(self, worker: Worker) -> None:
        """Add ``worker``'s in-flight jobs, rate-limit waits and (unless the backend's are
        shown already) its breakers."""
        shown = self.snapshot is not None and self.snapshot.shared is not None
        self.registry.register(WorkerCollector(worker, breakers=not shown))

    async def aclose(self) -> None:
        """Stop the background reads of the backend, the rendering ahead and the drift
        listener."""
        self._detach()
        if self._ahead is not None:
            self._ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ahead
        if self.snapshot is not None:
            await self.snapshot.aclose()

    async def render(self) -> bytes:
        """The exposition text, with the backend's figures as last read (:class:`QueueSnapshot`)
        and this process's at most ``fresh_s`` old (see the class)."""
        self._scraped_at = time.monotonic()
        if self.snapshot is not None:
            await self.snapshot.refresh()
        if self._took <= self.inline_s or self.fresh_s <= 0:
            return self._render()
        if self._ahead is None or self._ahead.done():
            self._ahead = asyncio.create_task(self._render_ahead(), name="genspool-metrics")
        if time.monotonic() - self._text_at <= self.fresh_s + self._took:
            return self._text
        return await self._render_in_thread(since=self._scraped_at)

    def _render(self) -> bytes:
        began = time.monotonic()
        text = self.exposition.render()
        self._text, self._text_at, self._took = text, began, time.monotonic() - began
        return text

    async def _render_in_thread(self, since: float) -> bytes:
        """A text begun after ``since`` (concurrent scrapes share one rendering)."""
        async with self._rendering:
            if self._text_at < since:
                await asyncio.to_thread(self._render)
            return self._text

    def _ahead_wanted(self) -> bool:
        """Still scraped, still costly, and rendering ahead not switched off (``fresh_s`` 0)."""
        scraped = time.monotonic() - self._scraped_at < self.idle_s
        return scraped and self._took > self.inline_s and self.fresh_s > 0

    async def _render_ahead(self) -> None:
        while self._ahead_wanted():
            await asyncio.sleep(self.fresh_s)
            await self._render_in_thread(since=time.monotonic())


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
