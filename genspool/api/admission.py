"""Load shedding at the door: refuse new work for a model whose queue is too deep or too old.

A model with ``admission.max_queue_depth`` or ``max_queue_age_s`` in its config gets a 429 with
``Retry-After`` for a submission beyond either limit; nothing already accepted is touched. The
check itself must cost nothing on the submit path, so it reads a snapshot of the queue that a
background task refreshes every ``refresh_s`` (one ``depth()`` and one ``oldest_waiting()`` of
the backend, shared by all the models), plus the submissions this process admitted since that
snapshot. Other API processes' admissions show up at the next refresh.

``Retry-After`` is an estimate: for depth, the excess divided by the rate at which the queue
drained between the last two snapshots; for age, how far the oldest job is past the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from genspool.config import ModelConfig
from genspool.core.queue import Queue
from genspool.exceptions import RateLimited

__all__ = ["Admission"]

log = logging.getLogger("genspool.admission")

WAITING = ("queued", "retrying")
MAX_RETRY_AFTER_S = 60.0
INTERACTIVE_RESERVE = 1.25
#: How long after its admission a job is surely written (and so in a depth read).
WRITE_GRACE_S = 0.1


class Admission:
    def __init__(
        self,
        queue: Queue,
        configs: list[ModelConfig],
        *,
        refresh_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.refresh_s = refresh_s
        self.clock = clock
        self.enabled = any(
            c.admission.max_queue_depth is not None or c.admission.max_queue_age_s is not None
            for c in configs
        )
        self._waiting: dict[str, int] = {}
        self._oldest: dict[str, float] = {}
        self._admitted: Counter[str] = Counter()  # counted, not yet known to be in the snapshot
        self._admissions: deque[tuple[float, str]] = deque()  # (monotonic time, model)
        self._drain_per_s: dict[str, float] = {}
        self._at = 0.0
        #: Submissions refused, by (model, reason): ``queue_depth`` or ``queue_age`` (metrics).
        self.shed: Counter[tuple[str, str]] = Counter()

    def check(self, cfg: ModelConfig, priority: int = 0, *, tenant: str | None = None) -> None:
        """Raise :class:`RateLimited` if ``cfg``'s model may take no more work now; otherwise
        count the submission against the snapshot.

        Work of a priority above 0 (the OpenAI-compatible routes: someone is waiting for the
        answer) keeps a reserve: it is refused only past ``INTERACTIVE_RESERVE`` times the
        depth limit, and never for the age of the queue, since it runs ahead of that queue."""
        shed = cfg.admission
        if shed.max_queue_depth is not None:
            limit = shed.max_queue_depth * (INTERACTIVE_RESERVE if priority > 0 else 1.0)
            waiting = self._waiting.get(cfg.name, 0) + self._admitted[cfg.name]
            if waiting >= limit:
                excess = waiting - limit + 1
                drain = self._drain_per_s.get(cfg.name, 0.0)
                wait = _bounded(excess / drain if drain > 0 else 1.0)
                _log_shed(cfg.name, tenant, f"{waiting} waiting, limit {limit:g}", wait)
                self.shed[cfg.name, "queue_depth"] += 1
                raise RateLimited(
                    f"model {cfg.name} is overloaded: {waiting} jobs are waiting and its"
                    f" max_queue_depth is {shed.max_queue_depth}; retry later",
                    retry_after=wait,
                )
        if shed.max_queue_age_s is not None and priority <= 0 and cfg.name in self._oldest:
            age = self.clock() - self._oldest[cfg.name]
            if age > shed.max_queue_age_s:
                wait = _bounded(age - shed.max_queue_age_s)
                what = f"oldest waiting {age:.1f} s, limit {shed.max_queue_age_s:g} s"
                _log_shed(cfg.name, tenant, what, wait)
                self.shed[cfg.name, "queue_age"] += 1
                raise RateLimited(
                    f"model {cfg.name} is overloaded: its oldest waiting job has waited"
                    f" {age:.1f} s and its max_queue_age_s is {shed.max_queue_age_s:g};"
                    " retry later",
                    retry_after=wait,
                )
        self._admitted[cfg.name] += 1
        self._admissions.append((time.monotonic(), cfg.name))

    async def run(self) -> None:
        """Refresh the snapshot until cancelled (only when some model sheds load)."""
        if not self.enabled:
            return
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # keep the last snapshot; the backend may come back
                log.warning("could not read the queue depth for load shedding: %s", exc)
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        # A submission is counted here before its job is written: one counted up to
        # WRITE_GRACE_S before the depth is read may not be in it yet, so it stays counted
        # (erring on the side of shedding) rather than falling between the two.
        admitted = self._settled(time.monotonic() - WRITE_GRACE_S)
        depth = await self.queue.depth()
        oldest = await self.queue.oldest_waiting()
        now = self.clock()
        waiting = {m: sum(c.get(s, 0) for s in WAITING) for m, c in depth.items()}
        if self._at:
            elapsed = max(now - self._at, 1e-3)
            for model, before in self._waiting.items():
                drained = before + admitted[model] - waiting.get(model, 0)
                self._drain_per_s[model] = max(drained, 0) / elapsed
        self._waiting, self._oldest, self._at = waiting, oldest, now

    def _settled(self, before: float) -> Counter[str]:
        """Take out of the count the submissions admitted before ``before`` (monotonic)."""
        settled: Counter[str] = Counter()
        while self._admissions and self._admissions[0][0] <= before:
            settled[self._admissions.popleft()[1]] += 1
        self._admitted -= settled
        return settled


def _log_shed(model: str, tenant: str | None, why: str, retry_after: float) -> None:
    who = f"model {model}" if tenant is None else f"model {model}, tenant {tenant}"
    log.warning("shed a submission (%s): queue %s; Retry-After %.0f s", who, why, retry_after)


def _bounded(seconds: float) -> float:
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_S)
