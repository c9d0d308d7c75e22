"""The generic cell rate algorithm, the arithmetic of every shared rate limit.

Backends store one number per bucket (the theoretical arrival time) and run this function
inside their atomic step; the process-local limiter runs it on a dict.
"""

from __future__ import annotations

__all__ = ["gcra"]


def gcra(
    tat: float | None, now: float, cost: float, rate_per_s: float, burst: float
) -> tuple[float, float]:
    """``(new_tat, wait_s)`` from the stored theoretical arrival time ``tat``. ``wait_s == 0``
    means allowed (store ``new_tat``); otherwise keep ``tat`` and retry after ``wait_s``. A
    cost above ``burst`` is let through once the bucket is full, so an oversize request is
    slowed, never refused forever."""
    interval = 1.0 / rate_per_s
    base = max(tat or now, now)
    new_tat = base + min(cost, burst) * interval
    allow_at = new_tat - burst * interval
    if allow_at - now > 1e-9:  # not a rounding error of the float sums above
        return (tat or now), allow_at - now
    return base + cost * interval, 0.0
