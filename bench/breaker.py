"""Breaker window micro-benchmark: outcomes recorded per second by the circuit breaker's
running-count window against a copy of the recount it replaced, in the same script run.

    python bench/breaker.py [--window 1000,10000,100000] [--calls 200000] [--rounds 3]

A closed breaker with a failure ratio is fed successes and the odd failure (never enough to
trip it) at a fake clock that moves so that ``--window`` outcomes stay in its 60 s window; each
round times ``--calls`` outcomes per implementation, interleaved. The old one summed the whole
window on every call (O(window)); the new one keeps running totals (O(1) amortized). Prints
calls/s (median of the rounds) and the ratio new/old per window size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable

from genspool.resilience.breaker import Breaker, BreakerPolicy, State

POLICY = BreakerPolicy(failures=10**9, failure_ratio=0.5, min_calls=20, window_s=60.0)


class RecountBreaker:
    """The window as it was before: a deque of outcomes, recounted on every call."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy, self.clock = policy, clock
        self.state = State.CLOSED
        self.failures = 0
        self._window: deque[tuple[float, bool]] = deque()

    def fill(self, n: int) -> None:
        """``n`` outcomes straight into the window (recording them would cost O(n**2))."""
        self._window.extend((self.clock(), i % 10 == 0) for i in range(n))

    def record(self, failed: bool | None, *, probe: bool) -> None:
        if failed is None:
            return
        now = self.clock()
        self.failures = self.failures + 1 if failed else 0
        self._window.append((now, failed))
        while self._window and self._window[0][0] <= now - self.policy.window_s:
            self._window.popleft()
        if self._tripped():
            self.state = State.OPEN

    def _tripped(self) -> bool:
        p = self.policy
        if self.failures >= p.failures:
            return True
        if p.failure_ratio is None or len(self._window) < p.min_calls:
            return False
        failed = sum(1 for _, f in self._window if f)
        return failed / len(self._window) >= p.failure_ratio


class Clock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def rate(make: Callable[[Clock], Breaker | RecountBreaker], window: int, calls: int) -> float:
    clock = Clock(POLICY.window_s / window)
    breaker = make(clock)
    if isinstance(breaker, RecountBreaker):
        breaker.fill(window)
    else:
        for i in range(window):  # fill the window first
            breaker.record(i % 10 == 0, probe=False)
    start = time.perf_counter()
    for i in range(calls):
        breaker.record(i % 10 == 0, probe=False)
    elapsed = time.perf_counter() - start
    assert breaker.state is State.CLOSED
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", default="1000,10000,100000", help="outcomes in the window")
    parser.add_argument("--calls", type=int, default=200_000, help="timed outcomes per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'window':>8} {'new calls/s':>14} {'old calls/s':>14} {'new/old':>8}")
    for window in (int(w) for w in args.window.split(",")):
        # The recount costs O(window) a call: time fewer calls of it so a round ends soon.
        old_calls = max(200, min(args.calls, 20_000_000 // window))
        new, old = [], []
        for _ in range(args.rounds):
            new.append(rate(lambda c: Breaker(POLICY, c), window, args.calls))
            old.append(rate(lambda c: RecountBreaker(POLICY, c), window, old_calls))
        n, o = statistics.median(new), statistics.median(old)
        print(f"{window:>8} {n:>14,.0f} {o:>14,.0f} {n / o:>7.1f}x")


if __name__ == "__main__":
    main()
