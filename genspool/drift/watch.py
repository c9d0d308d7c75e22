"""Drift checked on a schedule, and old samples deleted.

Every model with ``drift.check_every_s`` gets a report of its default windows (the last day
against the week before) that often, so a drifting model shows in ``genspool_drift_flagged`` and
the log without anyone asking for a report. Each API process checks on its own (a report only
reads samples; the gauge is per process, like every series). Every hour, samples older than the
longest ``drift.keep_days`` of the sampled models are deleted (the same delete from two
processes deletes once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from genspool.config import ModelConfig
from genspool.core.roles import DriftSamples
from genspool.drift.report import drift_report
from genspool.drift.windows import spans

__all__ = ["DriftWatch"]

log = logging.getLogger("genspool.drift")
PURGE_EVERY_S = 3600.0


class DriftWatch:
    def __init__(
        self, store: DriftSamples | None, configs: Sequence[ModelConfig], clock: Callable[[], float]
    ) -> None:
        self.store, self.clock = store, clock
        sampled = [c for c in configs if c.drift.sample_rate > 0]
        self.configs = [c for c in sampled if c.drift.check_every_s]
        self.keep_s = max((c.drift.keep_days * 86_400 for c in sampled), default=None)

    async def run(self) -> None:
        """Check each watched model at its interval and purge hourly, until cancelled (nothing
        sampled: return at once)."""
        if self.store is None or self.keep_s is None:
            return
        watches = [self._watch(self.store, cfg) for cfg in self.configs]
        await asyncio.gather(self._purging(self.store, self.keep_s), *watches)

    async def _purging(self, store: DriftSamples, keep_s: float) -> None:
        while True:
            try:
                await self.purge(store, keep_s)
            except Exception as exc:
                log.warning("could not delete old drift samples: %s", exc)
            await asyncio.sleep(PURGE_EVERY_S)

    async def purge(self, store: DriftSamples, keep_s: float) -> int:
        """Delete the samples older than ``keep_s``; how many."""
        deleted = await store.drift_purge(self.clock() - keep_s)
        if deleted:
            log.info("deleted %d drift samples older than %.0f days", deleted, keep_s / 86_400)
        return deleted

    async def _watch(self, store: DriftSamples, cfg: ModelConfig) -> None:
        every = float(cfg.drift.check_every_s or 0)
        while True:
            try:
                await self.check(store, cfg)
            except Exception as exc:  # the next check may succeed (the store may come back)
                log.warning("could not check the drift of model %s: %s", cfg.name, exc)
            await asyncio.sleep(every)

    async def check(self, store: DriftSamples, cfg: ModelConfig) -> str:
        """One report of ``cfg``'s default windows (handed to the alert listeners); its verdict."""
        baseline, current = spans(self.clock())
        return (await drift_report(store, cfg, baseline, current)).verdict
