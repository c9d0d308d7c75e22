"""The two time limits of a model call, and how the layers between them share what is left.

* ``timeout_s`` — the **job deadline**: how long one attempt of a job may take in all. The worker
  enforces it around the whole stack; :class:`JobDeadline` (the outermost layer) notes when it
  runs out, so layers that wait (the rate limiter) or try elsewhere (fallbacks) know how much
  time is left. A fallback model's stack, called from inside, keeps the first deadline.
* ``call_timeout_s`` — the **call timeout**: how long one call to the model may take, in-call
  retries included (default ``timeout_s``). :class:`CallTimeout` enforces it, and never lets a
  call run past the job deadline: it ends a little before, so that the layers above it (the
  breaker) see the timeout as the call's outcome rather than being cancelled with it.

A call cut off by either limit ends as a retryable :class:`~genspool.exceptions.ModelTimeout`
per request: the job is retried by the queue like any other retryable failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextvars import ContextVar

from genspool.exceptions import ModelTimeout
from genspool.providers.base import Provider, Request
from genspool.resilience.layer import Layer, Result

__all__ = ["CallTimeout", "JobDeadline", "call_time_left", "job_time_left"]

Clock = Callable[[], float]

_job_deadline: ContextVar[float | None] = ContextVar("genspool_job_deadline", default=None)
_call_deadline: ContextVar[float | None] = ContextVar("genspool_call_deadline", default=None)


def job_time_left(clock: Clock) -> float | None:
    """Seconds until the current job attempt's deadline; None outside a :class:`JobDeadline`."""
    deadline = _job_deadline.get()
    return None if deadline is None else deadline - clock()


def call_time_left(clock: Clock) -> float | None:
    """Seconds until the current call's timeout; None outside a :class:`CallTimeout`."""
    deadline = _call_deadline.get()
    return None if deadline is None else deadline - clock()


class JobDeadline(Layer):
    def __init__(self, inner: Provider, *, timeout_s: float, clock: Clock) -> None:
        super().__init__(inner)
        self.timeout_s, self.clock = timeout_s, clock

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        if _job_deadline.get() is not None:  # a fallback inside another model's attempt
            return await self.inner.handle(batch)
        token = _job_deadline.set(self.clock() + self.timeout_s)
        try:
            return await self.inner.handle(batch)
        finally:
            _job_deadline.reset(token)


class CallTimeout(Layer):
    """``margin_s``: how much earlier than the job deadline a call is ended."""

    def __init__(
        self, inner: Provider, *, call_timeout_s: float, clock: Clock, margin_s: float = 0.0
    ) -> None:
        super().__init__(inner)
        self.call_timeout_s, self.clock, self.margin_s = call_timeout_s, clock, margin_s

    def budget(self) -> float:
        left = job_time_left(self.clock)
        if left is None:
            return self.call_timeout_s
        return min(self.call_timeout_s, left - self.margin_s)

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        budget = self.budget()
        if budget <= 0:
            return self._timeouts(batch, "no time was left before the job's deadline")
        token = _call_deadline.set(self.clock() + budget)
        try:
            async with asyncio.timeout(budget):
                return await self.inner.handle(batch)
        except TimeoutError:
            return self._timeouts(batch, f"did not answer within {budget:.3g} s")
        finally:
            _call_deadline.reset(token)

    def _timeouts(self, batch: Sequence[Request], why: str) -> list[Result]:
        limit = f"call_timeout_s={self.call_timeout_s:g}, bounded by the job's timeout_s"
        err = ModelTimeout(f"model {self.model} {why} ({limit})")
        return [err] * len(batch)
