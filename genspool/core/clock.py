"""One clock for every process: the backend's time, read without a round trip.

Leases, expiry and maintenance compare times written by different processes, so they must all
read one clock. Each process's own drifts: a worker 10 s behind saw every lease of an on-time
worker as its own to keep, and an on-time worker took back all of the slow one's leases (50 of
50 jobs dead-lettered as "lease expired"); a worker 60 s ahead expired jobs 45 s early.

:class:`ServerClock` is the local clock plus an offset measured against the backend's
:meth:`~genspool.core.roles.Coordination.server_time` (the quickest of a few round trips, at
the middle of it), measured again every ``refresh_s``, at once after the local clock jumped,
and every second while the backend cannot be read (it is restarting) until it can. A local
clock more than ``warn_s`` off is reported once, by how much.

The queue facade uses one unless it is given a clock of its own (a test's fake clock, which is
then the clock as it is: tests move it on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["ServerClock"]

log = logging.getLogger("genspool.clock")


class ServerClock:
    """``local() + offset``, where ``offset`` is the backend's time minus the local time."""

    #: How often the offset is measured again (a clock drifts by well under 1 ms a minute).
    REFRESH_S = 30.0
    #: A local clock further than this from the backend's is reported (once, as a warning).
    WARN_S = 1.0
    #: Round trips per measurement: the quickest bounds the error best (half its duration).
    SAMPLES = 3
    #: How often the background task looks for a jump of the local clock, and retries a
    #: measurement that failed.
    TICK_S = 1.0
    #: A local clock that moved this much against the monotonic one was set (an NTP step).
    JUMP_S = 0.5

    def __init__(
        self,
        local: Callable[[], float] = time.time,
        *,
        refresh_s: float = REFRESH_S,
        warn_s: float = WARN_S,
    ) -> None:
        self.local, self.refresh_s, self.warn_s = local, refresh_s, warn_s
        self.offset = 0.0
        #: How far the offset may be off: half the round trip it was measured over.
        self.uncertainty = math.inf
        self.name = "the backend"
        self._source: Callable[[], Awaitable[float]] | None = None
        self._anchor = 0.0  # local() - monotonic() when last measured: a jump moves it
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self.local() + self.offset

    @property
    def synced(self) -> bool:
        return self.uncertainty < math.inf

    def follow(self, source: Callable[[], Awaitable[float]], name: str) -> None:
        """Measure against ``source`` (a backend's ``server_time``), named ``name`` in logs."""
        self._source, self.name = source, name

    async def sync(self) -> float:
        """Measure the offset now; returns it. Raises what the backend raises."""
        if self._source is None:
            raise RuntimeError("ServerClock.sync() before follow(): no backend to measure")
        best_rtt, best = math.inf, 0.0
        for _ in range(self.SAMPLES):
            t0 = self.local()
            server = await self._source()
            t1 = self.local()
            if t1 - t0 < best_rtt:
                best_rtt, best = t1 - t0, server - (t0 + t1) / 2
        self.offset, self.uncertainty = best, max(best_rtt, 0.0) / 2
        self._anchor = self.local() - time.monotonic()
        self._report()
        return best

    def _report(self) -> None:
        if self._warned or abs(self.offset) - self.uncertainty <= self.warn_s:
            return
        self._warned = True
        side = "behind" if self.offset > 0 else "ahead of"
        log.warning(
            "this process's clock is %.3f s %s the clock of %s; leases, expiry and maintenance "
            "use %s's time (set the clock right: NTP)",
            abs(self.offset), side, self.name, self.name,
        )  # fmt: skip

    def _jumped(self) -> bool:
        return abs(self.local() - time.monotonic() - self._anchor) > self.JUMP_S

    # -- keeping it measured -----------------------------------------------------------------

    async def start(self) -> None:
        """Measure now, then keep measuring in the background until :meth:`stop`."""
        if self._task is not None:
            return
        await self.sync()
        self._task = asyncio.create_task(self._keep(), name="genspool-server-clock")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        last, failing = time.monotonic(), False
        while True:
            await asyncio.sleep(self.TICK_S)
            if not (failing or self._jumped() or time.monotonic() - last >= self.refresh_s):
                continue
            try:
                before = self.offset
                await self.sync()
            except Exception as exc:  # unreachable or reconnecting: keep the last offset
                if not failing:
                    log.info("cannot read the time of %s (%s); retrying", self.name, exc)
                failing = True
                continue
            if abs(self.offset - before) > self.JUMP_S:
                log.info("the clock offset to %s moved %+.3f s", self.name, self.offset - before)
            failing, last = False, time.monotonic()
