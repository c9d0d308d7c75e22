"""A circuit breaker per model endpoint: stop calling a model that keeps failing, try it again
after a cool-down.

States: **closed** (calls go through) → **open** after ``failures`` consecutive failures, or when
at least ``min_calls`` calls in the last ``window_s`` failed in a share of ``failure_ratio`` or
more → **half-open** once ``cooldown_s`` has passed: up to ``probes`` calls go through; the first
probe that succeeds closes it, one that fails opens it again for another cool-down.

Only failures that say something about the endpoint count: retryable ones (5xx, 429, timeouts,
connection errors). A non-retryable error (a 400 for a bad prompt) means the endpoint answered,
so it counts as a success; calls refused before reaching the model (by this breaker or the rate
limiter) do not count at all. In-call retries happen below the breaker: it sees the outcome of a
call after them.

While open, requests are not sent: each gets a retryable
:class:`~genspool.exceptions.CircuitOpen` whose ``retry_after`` is the rest of the cool-down, so
the queue brings the job back when a probe can go, without using up one of the job's attempts
(the call was never made; ``CircuitOpen.counts_as_attempt`` is False). Each process keeps its
own breaker (decisions need no round trip); every transition is written to the shared key-value
role (namespace ``breakers``, key = model) so any API process can show it — with several
workers, the last transition written is shown.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from genspool.exceptions import CircuitOpen, ModelError, ModelRateLimited
from genspool.providers.base import Provider, Request
from genspool.resilience.layer import Layer, Result
from genspool.resilience.shared import Shared

__all__ = [
    "NAMESPACE",
    "Breaker",
    "BreakerLayer",
    "BreakerPolicy",
    "State",
    "Transition",
    "counts_as_failure",
]

log = logging.getLogger("genspool.resilience.breaker")

NAMESPACE = "breakers"
Clock = Callable[[], float]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    failure_ratio: float | None = 0.5
    min_calls: int = 20
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probes: int = 1


def counts_as_failure(result: Result) -> bool | None:
    """True: a failure of the endpoint; False: it answered; None: it was never called."""
    if isinstance(result, CircuitOpen | ModelRateLimited):
        return None
    return isinstance(result, ModelError) and result.retryable


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, with the counts that caused it."""

    before: State
    after: State
    failures: int  # consecutive, at the change
    calls: int  # in the window
    failed: int  # in the window

    def describe(self, policy: BreakerPolicy) -> str:
        arrow = f"{self.before.value} -> {self.after.value}"
        if self.before is State.CLOSED:
            return (
                f"{arrow} ({self.failures} consecutive failures; {self.failed} of "
                f"{self.calls} calls failed in the last {policy.window_s:g} s); "
                f"calls refused for {policy.cooldown_s:g} s"
            )
        if self.after is State.HALF_OPEN:
            return (
                f"{arrow} (cool-down of {policy.cooldown_s:g} s over; up to {policy.probes} probes)"
            )
        verdict = "succeeded" if self.after is State.CLOSED else "failed"
        return f"{arrow} (a probe {verdict})"


class _Window:
    """The outcomes of the last ``span_s`` seconds, with running totals: adding one costs O(1)
    amortized (each outcome is appended once and dropped once), where recounting the window on
    every call cost O(calls in the window) — measured in ``bench/breaker.py``. Outcomes of the
    same instant share one entry, so a burst of answers to one batch is one entry."""

    __slots__ = ("_entries", "calls", "failed", "span_s")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._entries: deque[list[float]] = deque()  # [time, calls, failed]
        self.calls = 0
        self.failed = 0

    def add(self, now: float, failed: bool) -> None:
        entries = self._entries
        if entries and entries[-1][0] == now:
            entries[-1][1] += 1
            entries[-1][2] += failed
        else:
            entries.append([now, 1, int(failed)])
        self.calls += 1
        self.failed += failed
        cutoff = now - self.span_s
        while entries[0][0] <= cutoff:
            _, calls, fails = entries.popleft()
            self.calls -= int(calls)
            self.failed -= int(fails)
            if not entries:
                break

    def clear(self) -> None:
        self._entries.clear()
        self.calls = self.failed = 0


class Breaker:
    """The state machine alone: no I/O, time from ``clock``."""

    def __init__(self, policy: BreakerPolicy, clock: Clock) -> None:
        self.policy, self.clock = policy, clock
        self.state = State.CLOSED
        self.previous: State | None = None
        self.since = clock()
        self.failures = 0  # consecutive
        self.opens = 0
        self.version = 0  # goes up on every transition
        self._window = _Window(policy.window_s)
        self._probing = 0
        #: Transitions not yet reported (the layer logs and drains them).
        self.changes: list[Transition] = []

    def admit(self, n: int) -> int:
        """How many of ``n`` calls may go now (half-open: the probes not yet in flight)."""
        if self.state is State.OPEN and self.clock() >= self.since + self.policy.cooldown_s:
            self._move(State.HALF_OPEN)
        if self.state is State.CLOSED:
            return n
        if self.state is State.OPEN:
            return 0
        allowed = max(0, min(n, self.policy.probes - self._probing))
        self._probing += allowed
        return allowed

    def retry_after(self) -> float:
        """When a refused call should come back: the rest of the cool-down; while half-open
        (probes in flight), one cool-down — a failed probe opens it for that long anyway."""
        if self.state is State.OPEN:
            return max(0.0, self.since + self.policy.cooldown_s - self.clock())
        return self.policy.cooldown_s

    def record(self, failed: bool | None, *, probe: bool) -> None:
        """The outcome of one admitted call (``probe``: admitted while half-open)."""
        if probe:
            self._probing = max(0, self._probing - 1)
        if failed is None:
            return
        if self.state is State.HALF_OPEN:
            if probe:
                self._move(State.OPEN if failed else State.CLOSED)
        elif self.state is State.CLOSED:
            self._count(failed)
            if self._tripped():
                self._move(State.OPEN)
        # OPEN: a late answer to a call made before it opened says nothing new.

    def _count(self, failed: bool) -> None:
        self.failures = self.failures + 1 if failed else 0
        self._window.add(self.clock(), failed)

    def _tripped(self) -> bool:
        p = self.policy
        if self.failures >= p.failures:
            return True
        calls = self._window.calls
        if p.failure_ratio is None or calls < p.min_calls:
            return False
        return self._window.failed / calls >= p.failure_ratio

    def _move(self, state: State) -> None:
        calls, failed = self._window.calls, self._window.failed
        self.changes.append(Transition(self.state, state, self.failures, calls, failed))
        del self.changes[:-16]  # a breaker used without its layer keeps only the latest
        self.previous, self.state, self.since = self.state, state, self.clock()
        self.version += 1
        if state is State.OPEN:
            self.opens += 1
        elif state is State.CLOSED:
            self.failures, self._probing = 0, 0
            self._window.clear()

    def snapshot(self) -> dict[str, Any]:
        """The state as shown by ``GET /v1/breakers`` (times are Unix seconds)."""
        until = self.since + self.policy.cooldown_s if self.state is State.OPEN else None
        return {
            "state": self.state.value,
            "since": self.since,
            "previous": self.previous.value if self.previous else None,
            "failures": self.failures,
            "opens_count": self.opens,
            "open_until": until,
        }


class BreakerLayer(Layer):
    def __init__(self, inner: Provider, *, breaker: Breaker, shared: Shared) -> None:
        super().__init__(inner)
        self.breaker, self.shared = breaker, shared

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        seen = self.breaker.version
        allowed = self.breaker.admit(len(batch))  # may move OPEN -> HALF_OPEN
        probe = self.breaker.state is State.HALF_OPEN
        await self._publish(seen)
        seen = self.breaker.version
        results = await self._call(batch[:allowed], probe)
        refused = self._refusal(len(batch) - allowed)
        await self._publish(seen)
        return results + refused

    async def _call(self, batch: Sequence[Request], probe: bool) -> list[Result]:
        if not batch:
            return []
        try:
            results = await self.inner.handle(batch)
        except Exception:
            for _ in batch:  # a provider that raises is as broken as one that answers 500
                self.breaker.record(True, probe=probe)
            raise
        except BaseException:  # cancelled: no outcome, but give back the probe slots
            for _ in batch:
                self.breaker.record(None, probe=probe)
            raise
        for result in results:
            self.breaker.record(counts_as_failure(result), probe=probe)
        return results

    def _refusal(self, n: int) -> list[Result]:
        if n == 0:
            return []
        wait = self.breaker.retry_after()
        state = self.breaker.state.value.replace("_", "-")
        err = CircuitOpen(
            f"model {self.model}: circuit breaker {state} after repeated failures; "
            f"not called, retry in {wait:.1f} s",
            retry_after=wait,
        )
        return [err] * n

    async def _publish(self, seen: int) -> None:
        if self.breaker.version == seen:
            return
        changes, self.breaker.changes = self.breaker.changes, []
        for change in changes:
            level = logging.WARNING if change.after is State.OPEN else logging.INFO
            text = change.describe(self.breaker.policy)
            log.log(level, "model %s: circuit breaker %s", self.model, text)
        snap = self.breaker.snapshot()
        try:
            await self.shared.kv.kv_put(NAMESPACE, self.model, orjson.dumps(snap))
        except Exception as exc:  # showing the state must never fail a call
            log.warning("could not store the breaker state of %s: %s", self.model, exc)
