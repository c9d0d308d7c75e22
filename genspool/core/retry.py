"""Retry policy: data in, a decision out.

``RetryPolicy.next_delay`` says how long to wait before the next attempt, or ``None`` when the
job must be dead-lettered. Backoff is exponential with full jitter (AWS architecture blog,
"Exponential Backoff And Jitter"); a server's ``Retry-After`` is a floor, never ignored, up to
``max_retry_after_s``: a server that asks for more (``Retry-After: 86400``) would park the job
for that long, so the job is dead-lettered at once instead, with that reason
(:meth:`RetryPolicy.over_cap`), after any fallback model has been tried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 0.5
    cap_s: float = 60.0
    max_retry_after_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        return self.rng.uniform(0.0, ceiling)

    def next_delay(
        self,
        attempts: int,
        max_attempts: int,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> float | None:
        if not retryable or attempts >= max_attempts or self.over_cap(retry_after):
            return None
        delay = self.backoff(attempts)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def over_cap(self, retry_after: float | None) -> bool:
        """Whether a server's ``Retry-After`` asks for a longer wait than this policy allows."""
        return retry_after is not None and retry_after > self.max_retry_after_s
