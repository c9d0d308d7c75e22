"""``/ui/``: per model, the queue (depth by status, oldest waiting age), the live workers
serving it (:mod:`genspool.core.presence`) and its breaker, read from the store — so every API
process shows the same — and this process's throughput and latency (its metrics,
:mod:`genspool.metrics`) as sparklines, with the submissions shed at the door.

The board is pushed by the page's live stream (:mod:`~genspool.api.ui.live`) every second when
it changed, and polled every 2 s while the stream is down. However many browsers look, the
store is read at most once a second (:class:`Board`), the trends sampled at most once a second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.deps import Services, services
from genspool.api.routes_ops import breaker_states
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.config import INTERNAL_MODELS
from genspool.core.keys import Scope
from genspool.core.presence import WorkerSeen, live_workers
from genspool.metrics import Metrics

__all__ = ["Board", "ModelRow", "Trends", "router"]

router = APIRouter(include_in_schema=False)

_ACTIVE = ("queued", "retrying", "running")


@dataclass(frozen=True, slots=True)
class _Count:
    at: float
    finished: float
    latency_sum: float
    latency_count: float


class Trends:
    """Per model, jobs ended per second and their mean end-to-end latency, from this process's
    counters, over the last ``size`` samples taken at least ``every_s`` apart."""

    def __init__(self, size: int = 60, every_s: float = 1.0) -> None:
        self.size, self.every_s = size, every_s
        self._counts: dict[str, deque[_Count]] = {}
        self._last = -float("inf")

    def sample(self, metrics: Metrics, at: float) -> None:
        if at - self._last < self.every_s:
            return
        self._last = at
        finished = _totals(metrics.series.finished.collect(), "_total")
        sums = _totals(metrics.series.end_to_end.collect(), "_sum")
        counts = _totals(metrics.series.end_to_end.collect(), "_count")
        for model in finished.keys() | sums.keys():
            kept = self._counts.setdefault(model, deque(maxlen=self.size + 1))
            kept.append(
                _Count(at, finished.get(model, 0.0), sums.get(model, 0.0), counts.get(model, 0.0))
            )

    def throughput(self, model: str) -> list[float | None]:
        """Jobs ended per second between each pair of samples."""
        pairs = self._pairs(model)
        return [(b.finished - a.finished) / max(b.at - a.at, 1e-9) for a, b in pairs]

    def latency(self, model: str) -> list[float | None]:
        """Mean seconds from submission to end of the jobs that ended between two samples
        (None where none did)."""
        out: list[float | None] = []
        for a, b in self._pairs(model):
            n = b.latency_count - a.latency_count
            out.append((b.latency_sum - a.latency_sum) / n if n > 0 else None)
        return out

    def _pairs(self, model: str) -> list[tuple[_Count, _Count]]:
        kept = list(self._counts.get(model, ()))
        return list(itertools.pairwise(kept))


def _totals(families: Iterable[Any], suffix: str) -> dict[str, float]:
    """Per model label, the sum of the samples whose name ends with ``suffix``."""
    out: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name.endswith(suffix):
                model = sample.labels.get("model", "")
                out[model] = out.get(model, 0.0) + sample.value
    return out


@dataclass(slots=True)
class ModelRow:
    name: str
    depth: dict[str, int]
    oldest_age: float | None
    breaker: str
    opens: int
    shed: dict[str, int]
    workers: int = 0
    throughput: list[float | None] = field(default_factory=list)
    latency: list[float | None] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return next((v for v in reversed(self.throughput) if v is not None), None)

    @property
    def mean_latency(self) -> float | None:
        return next((v for v in reversed(self.latency) if v is not None), None)


class Board:
    """The store's figures (depth, oldest waiting, breakers), read at most once a ``ttl_s``;
    concurrent readers share one read."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self.trends = Trends()
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._depth: dict[str, dict[str, int]] = {}
        self._oldest: dict[str, float] = {}
        self._breakers: dict[str, dict[str, Any]] = {}
        self._workers: list[WorkerSeen] = []
        self._clock: Callable[[], float] = time.time

    async def rows(self, svc: Services, metrics: Metrics | None) -> list[ModelRow]:
        await self._refresh(svc)
        if metrics is not None:
            self.trends.sample(metrics, time.monotonic())
        now = svc.queue.clock()
        return [self._row(name, svc, now) for name in self._models(svc)]

    async def _refresh(self, svc: Services) -> None:
        if time.monotonic() - self._read_at < self.ttl_s:
            return
        async with self._lock:
            if time.monotonic() - self._read_at < self.ttl_s:
                return
            self._depth = await svc.queue.depth()
            self._oldest = await svc.queue.oldest_waiting()
            self._breakers = await breaker_states(svc)
            queue = svc.queue
            self._workers = await live_workers(queue.storage.kv, queue.clock(), queue.lease_s)
            self._clock = queue.clock
            self._read_at = time.monotonic()

    @property
    def workers(self) -> list[dict[str, Any]]:
        """The live workers (:mod:`genspool.core.presence`) as last read, with their ages."""
        now = self._clock()
        return [{**asdict(w), "models": [m for m in w.models if m not in INTERNAL_MODELS],
                 "up_s": max(now - w.started_at, 0.0), "seen_s": max(now - w.seen_at, 0.0)}
                for w in self._workers]  # fmt: skip

    def _models(self, svc: Services) -> list[str]:
        """The served models, and genspool's own (fan-out, webhooks, answers) while busy."""
        names = {cfg.name for cfg in svc.catalog if cfg.name not in INTERNAL_MODELS}
        names |= {m for m, counts in self._depth.items() if any(counts.values())}
        return sorted(names)

    def _row(self, name: str, svc: Services, now: float) -> ModelRow:
        depth = self._depth.get(name, {})
        oldest = self._oldest.get(name)
        breaker = self._breakers.get(name, {})
        return ModelRow(
            name=name,
            depth={s: int(depth.get(s, 0)) for s in _ACTIVE},
            oldest_age=None if oldest is None else max(now - oldest, 0.0),
            breaker=str(breaker.get("state", "unknown")),
            opens=int(breaker.get("opens_count", 0) or 0),
            shed=_shed(svc.admission.shed, name),
            workers=sum(name in w.models for w in self._workers),
            throughput=self.trends.throughput(name),
            latency=self.trends.latency(name),
        )


def _shed(counts: Mapping[tuple[str, str], int], model: str) -> dict[str, int]:
    return {reason: counts.get((model, reason), 0) for reason in ("queue_depth", "queue_age")}


def board_of(request: Request) -> Board:
    state = request.app.state
    board: Board | None = getattr(state, "board", None)
    if board is None:
        board = state.board = Board()
    return board


async def _rows(request: Request) -> list[ModelRow]:
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    return await board_of(request).rows(services(request), metrics)


@router.get("/")
@ui_requires(Scope.READ)
async def overview(request: Request, caller: UiCaller) -> Response:
    rows = await _rows(request)
    workers = board_of(request).workers
    return await render(request, "overview.html", caller, rows=rows, workers=workers)


@router.get("/overview/board")
@ui_requires(Scope.READ)
async def board(request: Request, caller: UiCaller) -> Response:
    rows = await _rows(request)
    workers = board_of(request).workers
    return await render(request, "_board.html", caller, rows=rows, workers=workers)
