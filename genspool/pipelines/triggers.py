"""What starts a pipeline run besides HTTP: schedule ticks, settled files, events.

No leader is elected. Every process that loads the pipelines (each API process and each
worker) watches the same triggers and, when one fires, stores the run under a key the trigger
determines — ``cron:{pipeline}:{tick}``, ``files:{path}:{size}:{mtime}``,
``event:{type}:{id}`` — and the store's uniqueness (:meth:`PipelineStore.run_put`) keeps the
first; the others get that run back. A schedule's ticks are also recorded, once each, as
``fired``, ``skipped`` or ``missed``, so a tick no process was up for shows as missed (or, by
the misfire policy, runs late) instead of vanishing.

Misfires: a process looks at the ticks since the latest one recorded (or since it started, for a
schedule never recorded). Those later than ``misfire_grace_s`` are late; ``catch_up: all`` runs
each, ``latest`` runs the latest and records the others skipped, ``none`` records them all
missed. A tick on time always runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genspool.core.patterns import compile_pattern
from genspool.core.pipeline import PipelineRun, Tick, new_run_id
from genspool.core.roles import PipelineStore
from genspool.pipelines.spec import Pipeline, Schedule

__all__ = [
    "FAKE_CLOCK_ENV",
    "FakeScheduleClock",
    "FileWatch",
    "Scheduler",
    "Triggers",
    "schedule_clock",
    "start_run",
]

#: A fake clock for the schedules, for tests and benchmarks that need hours of ticks in
#: seconds across several processes: ``REAL0:FAKE0:SPEED`` makes the time
#: ``FAKE0 + (now - REAL0) * SPEED``, the same in every process given the same value.
FAKE_CLOCK_ENV = "GENSPOOL_FAKE_SCHEDULE_CLOCK"


@dataclass(frozen=True, slots=True)
class FakeScheduleClock:
    """``fake0 + (real() - real0) * speed``: a clock whose seconds pass ``speed`` times faster
    than real ones (the scheduler divides its sleeps by ``speed``)."""

    real: Callable[[], float]
    real0: float
    fake0: float
    speed: float

    def __call__(self) -> float:
        return self.fake0 + (self.real() - self.real0) * self.speed


def schedule_clock(default: Callable[[], float]) -> Callable[[], float]:
    """The schedules' clock: ``default`` (the queue's), or the fake one the environment sets."""
    spec = os.environ.get(FAKE_CLOCK_ENV)
    if not spec:
        return default
    try:
        real0, fake0, speed = (float(x) for x in spec.split(":"))
    except ValueError:
        raise ValueError(f"{FAKE_CLOCK_ENV}: {spec!r} is not REAL0:FAKE0:SPEED") from None
    log.warning("schedules run on a fake clock (%s=%s): for tests only", FAKE_CLOCK_ENV, spec)
    return FakeScheduleClock(default, real0, fake0, speed)


log = logging.getLogger("genspool.pipelines")


async def start_run(
    store: PipelineStore,
    pipeline: Pipeline,
    *,
    now: float,
    trigger: str,
    inputs: dict[str, Any] | None = None,
    key: str | None = None,
    tenant: str | None = None,
    scopes: tuple[str, ...] | None = None,
    metadata: dict[str, str] | None = None,
    force: bool = False,
) -> PipelineRun:
    """A run stored (or the one already stored under ``key``); its inputs checked."""
    run = PipelineRun(
        id=new_run_id(), tenant=tenant or pipeline.tenant, pipeline=pipeline.name,
        created_at=now, trigger=trigger, key=key,
        inputs=pipeline.resolve_inputs(inputs or {}), scopes=scopes, metadata=metadata,
        force=force,
    )  # fmt: skip
    return await store.run_put(run)


class Scheduler:
    """The ticks of every scheduled pipeline: each fired once across all processes."""

    #: The longest sleep between looks (a tick of a new cron is never later than this).
    MAX_SLEEP_S = 1.0

    def __init__(
        self,
        store: PipelineStore,
        pipelines: dict[str, Pipeline],
        clock: Callable[[], float],
        *,
        on_run: Callable[[PipelineRun], None] | None = None,
    ) -> None:
        self.store, self.pipelines, self.clock, self.on_run = store, pipelines, clock, on_run
        #: Clock seconds per real second: the sleeps between looks are real seconds (on a
        #: fake clock at 120x, sleeping its seconds made each look two ticks late).
        self.speed = clock.speed if isinstance(clock, FakeScheduleClock) else 1.0
        #: Per (pipeline, schedule index): the last instant looked at.
        self._seen: dict[tuple[str, int], float] = {}

    @property
    def scheduled(self) -> list[tuple[Pipeline, int, Schedule]]:
        return [(p, i, s) for p in self.pipelines.values() for i, s in enumerate(p.on.schedule)]

    async def run(self) -> None:
        if not self.scheduled:
            return
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("checking the schedules failed; trying again")
            await asyncio.sleep(self._sleep())

    def _sleep(self) -> float:
        """Real seconds until the soonest tick (just after it), at most ``MAX_SLEEP_S``."""
        now, ahead = self.clock(), self.MAX_SLEEP_S * self.speed
        soonest = min(
            (s.ticks(now, now + ahead)[:1] or [now + ahead])[0] for _, _, s in self.scheduled
        )
        return max(0.01, min(self.MAX_SLEEP_S, (soonest - now) / self.speed + 0.005))

    async def check(self) -> list[Tick]:
        """Fire (or record as skipped or missed) every tick due since the last look."""
        now = self.clock()
        recorded: list[Tick] = []
        for pipeline, index, schedule in self.scheduled:
            since = self._seen.get((pipeline.name, index))
            if since is None:
                latest = await self.store.ticks_list(pipeline.name, None, 1)
                since = latest[0].at if latest else now
            due = schedule.ticks(since, now)
            self._seen[(pipeline.name, index)] = now
            recorded += await self._decide(pipeline, schedule, due, now)
        return recorded

    async def _decide(
        self, pipeline: Pipeline, schedule: Schedule, due: list[float], now: float
    ) -> list[Tick]:
        late = [t for t in due if now - t > schedule.misfire_grace_s]
        on_time = [t for t in due if now - t <= schedule.misfire_grace_s]
        fire = list(on_time)
        if schedule.catch_up == "all":
            fire = late + fire
        elif schedule.catch_up == "latest" and late and not on_time:
            fire = [late[-1]]
        out = []
        for at in due:
            if at in fire:
                out.append(await self._fire(pipeline, at, now))
            else:
                outcome = "skipped" if schedule.catch_up == "latest" else "missed"
                out.append(await self.store.tick_record(Tick(pipeline.name, at, outcome, now)))
        return out

    async def _fire(self, pipeline: Pipeline, at: float, now: float) -> Tick:
        key = f"cron:{pipeline.name}:{at:.0f}"
        run = await start_run(self.store, pipeline, now=now, trigger="schedule", key=key)
        tick = await self.store.tick_record(Tick(pipeline.name, at, "fired", now, run.id))
        if self.on_run is not None and run.created_at == now:
            self.on_run(run)
        return tick


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # when this size and time were first seen


class FileWatch:
    """One pipeline's watched directory: a file starts one run once it has settled (its size
    and modification time unchanged for ``settle_s``), under the key of its path, size and
    time, so a file written again later starts a new run and the same file never two."""

    def __init__(
        self,
        store: PipelineStore,
        pipeline: Pipeline,
        clock: Callable[[], float],
        *,
        on_run: Callable[[PipelineRun], None] | None = None,
    ) -> None:
        assert pipeline.on.files is not None
        self.store, self.pipeline, self.clock, self.on_run = store, pipeline, clock, on_run
        self.spec = pipeline.on.files
        self.root = (pipeline.base / self.spec.path).resolve()
        self._seen: dict[str, _Seen] = {}
        self._started: set[str] = set()

    async def run(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.spec.poll:
            while True:
                await self._scan_logged()
                await asyncio.sleep(self.spec.interval_s)
        from watchfiles import awatch  # events: a file that changes is looked at again at once

        changes = awatch(self.root, step=50, rust_timeout=int(self.spec.interval_s * 1000),
                         yield_on_timeout=True, recursive=False)  # fmt: skip
        async for _ in changes:
            await self._scan_logged()
            while any(k not in self._started for k in self._seen):  # settling: look again
                await asyncio.sleep(min(self.spec.interval_s, max(self.spec.settle_s / 4, 0.05)))
                await self._scan_logged()

    async def _scan_logged(self) -> None:
        try:
            await self.scan()
        except Exception:
            log.exception("pipeline %s: scanning %s failed", self.pipeline.name, self.root)

    async def scan(self) -> list[PipelineRun]:
        """Look at the directory once; the runs of the files that settled."""
        now = self.clock()
        found = await asyncio.to_thread(self._list)
        started = []
        for name, (size, mtime_ns) in found.items():
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
                self._seen[name] = _Seen(size, mtime_ns, now)
                self._started.discard(name)
                continue
            key = f"files:{name}:{size}:{mtime_ns}"
            if name in self._started or now - seen.since < self.spec.settle_s:
                continue
            run = await start_run(
                self.store, self.pipeline, now=now, trigger="files", key=key,
                inputs={self.spec.input: str(self.root / name)},
            )  # fmt: skip
            self._started.add(name)
            if run.created_at == now and self.on_run is not None:
                self.on_run(run)
            started.append(run)
        for gone in set(self._seen) - set(found):
            del self._seen[gone]
            self._started.discard(gone)
        return started

    def _list(self) -> dict[str, tuple[int, int]]:
        out = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not fnmatch.fnmatch(entry.name, self.spec.glob):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file():
                        st = entry.stat()
                        out[entry.name] = (st.st_size, st.st_mtime_ns)
        return out


class Triggers:
    """Every trigger of the loaded pipelines, run together in one process."""

    def __init__(
        self,
        store: PipelineStore,
        pipelines: dict[str, Pipeline],
        clock: Callable[[], float],
        *,
        on_run: Callable[[PipelineRun], None] | None = None,
    ) -> None:
        self.store, self.pipelines, self.clock, self.on_run = store, pipelines, clock, on_run
        self.scheduler = Scheduler(store, pipelines, schedule_clock(clock), on_run=on_run)
        self.watches = [
            FileWatch(store, p, clock, on_run=on_run)
            for p in pipelines.values()
            if p.on.files is not None
        ]
        self._events = [
            (p, compile_pattern(p.on.events.pattern))
            for p in pipelines.values()
            if p.on.events is not None
        ]

    @property
    def listens(self) -> bool:
        """Whether some pipeline is started by events (so the event hooks are worth it)."""
        return bool(self._events)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.scheduler.run())]
        tasks += [asyncio.create_task(w.run()) for w in self.watches]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def event(self, event: dict[str, Any]) -> list[PipelineRun]:
        """A job's or batch's event (``{type, id, tenant, detail}``): a run of every pipeline
        of that tenant whose ``on.events.pattern`` matches it, once per event however many
        processes see it (another tenant's work never starts a pipeline)."""
        out = []
        for pipeline, matcher in self._events:
            if event.get("tenant") != pipeline.tenant or not matcher(event):
                continue
            key = f"event:{event.get('type')}:{event.get('id')}"
            run = await start_run(
                self.store, pipeline, now=self.clock(), trigger="events", key=key,
                inputs={"event": event} if "event" in pipeline.inputs else {},
            )  # fmt: skip
            if self.on_run is not None:
                self.on_run(run)
            out.append(run)
        return out
