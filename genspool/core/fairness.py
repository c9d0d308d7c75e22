"""Fair share between tenants: start-time fair queuing over the waiting jobs of a model.

Every job gets a ``rank`` when it is submitted, and workers lease by (priority, rank). A tenant's
jobs are numbered one after the other from ``max(vtime, the tenant's last rank)``, where
``vtime`` is the rank of the job a worker leased last. A tenant with a backlog of ten thousand
jobs therefore holds ranks far ahead of ``vtime``, and a tenant that submits now starts at
``vtime``: its jobs interleave with the head of the backlog instead of waiting behind it. One
tenant alone is served in submission order.

The state is small and approximate on purpose, so that it costs nothing on the hot path: the
last rank per (model, tenant) lives in each API process (a tenant spread over several API
processes gets a little more than its share), and ``vtime`` is shared through the backend's KV,
read at most every ``refresh_s`` and written by workers at most every ``refresh_s``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from genspool.core.job import Job
from genspool.core.roles import KeyValue

__all__ = ["FairShare"]

NAMESPACE = "vtime"


class FairShare:
    def __init__(self, kv: KeyValue, *, refresh_s: float = 0.5, max_tenants: int = 10_000):
        self.kv = kv
        self.refresh_s = refresh_s
        self.max_tenants = max_tenants
        self._last: dict[tuple[str, str], float] = {}
        self._vtime: dict[str, tuple[float, float]] = {}  # model -> (vtime, read or written at)

    async def assign(self, jobs: Sequence[Job]) -> None:
        """Give each job its rank, in order."""
        for job in jobs:
            vtime = await self.vtime(job.model)
            key = (job.model, job.tenant)
            job.rank = max(vtime, self._last.get(key, 0.0)) + 1.0
            self._last[key] = job.rank
        if len(self._last) > self.max_tenants:
            self._forget_idle()

    async def vtime(self, model: str) -> float:
        value, at = self._vtime.get(model, (0.0, -self.refresh_s))
        now = time.monotonic()
        if now - at >= self.refresh_s:
            # Concurrent submissions use the value they have while this one read is under way.
            self._vtime[model] = (value, now)
            raw = await self.kv.kv_get(NAMESPACE, model)
            value = max(self._vtime[model][0], float(raw) if raw else 0.0)
            self._vtime[model] = (value, now)
        return value

    async def leased(self, model: str, jobs: Sequence[Job]) -> None:
        """Move ``vtime`` to the highest rank a worker just leased."""
        if not jobs:
            return
        top = max(j.rank for j in jobs)
        value, at = self._vtime.get(model, (0.0, -self.refresh_s))
        if top <= value:
            return
        now = time.monotonic()
        self._vtime[model] = (top, at)
        if now - at >= self.refresh_s:
            await self.kv.kv_put(NAMESPACE, model, repr(top).encode())
            self._vtime[model] = (top, now)

    def _forget_idle(self) -> None:
        """Drop tenants whose last rank is behind ``vtime``: they start from ``vtime`` anyway."""
        for key, last in list(self._last.items()):
            if last <= self._vtime.get(key[0], (0.0, 0.0))[0]:
                del self._last[key]
