"""Retries inside one call, for remote (OpenAI-compatible) models: a blip — a 502, a 429 with
a short ``Retry-After``, a reset connection — is retried on the spot instead of costing the job
an attempt and a trip through the queue.

How it composes with the job-level retries of the queue (the main mechanism): a *job attempt*
is one lease of the job by a worker; the queue counts attempts and dead-letters a job after
``max_attempts`` of them, whatever happened inside each. Within one attempt this layer makes at
most ``1 + retries`` requests to the model, all inside the call timeout (it sleeps only when the
backoff leaves the retried request at least as long again before the timeout). So a job is
tried at most ``max_attempts`` times as a job, and the model sees at most
``max_attempts * (1 + call_retries)`` requests for it (more if fallbacks answer for it).

Only retryable errors are retried; ``Retry-After`` is a floor on the wait, and one that does not
fit in the call is not waited out here: the error goes up with it, and the queue honours it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from genspool.core.joblog import reason
from genspool.core.retry import RetryPolicy
from genspool.exceptions import ModelError
from genspool.providers.base import Provider, Request
from genspool.resilience.layer import Layer, Result
from genspool.resilience.timeout import call_time_left

__all__ = ["InCallRetry"]

log = logging.getLogger("genspool.resilience.retry")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _retryable(result: Result) -> bool:
    return isinstance(result, ModelError) and result.retryable


class InCallRetry(Layer):
    def __init__(
        self,
        inner: Provider,
        *,
        retries: int = 2,
        policy: RetryPolicy | None = None,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self.retries = retries
        self.policy = policy or RetryPolicy(base_s=0.1, cap_s=2.0)
        self.clock, self.sleep = clock, sleep

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        results = list(await self._send(batch))
        for attempt in range(1, self.retries + 1):
            todo = [i for i, r in enumerate(results) if _retryable(r)]
            delay = self._delay(attempt, [results[i] for i in todo])
            if not todo or delay is None:
                break
            self._log(attempt, [results[i] for i in todo], delay)
            await self.sleep(delay)
            again = await self._send([batch[i] for i in todo])
            for i, result in zip(todo, again, strict=True):
                results[i] = result
        return results

    async def _send(self, batch: Sequence[Request]) -> list[Result]:
        return list(await self.inner.handle(batch))

    def _log(self, attempt: int, failed: Sequence[Result], delay: float) -> None:
        errors = [r for r in failed if isinstance(r, ModelError)]
        log.info(
            "model %s: in-call retry %d/%d of %d request(s) (%s); retry in %.2f s",
            self.model, attempt, self.retries, len(failed), reason(errors[0]), delay,
        )  # fmt: skip

    def _delay(self, attempt: int, failed: Sequence[Result]) -> float | None:
        """The wait before retry number ``attempt``; None when it would not fit in the call."""
        floor = max((r.retry_after or 0.0 for r in failed if isinstance(r, ModelError)), default=0)
        delay = self.policy.next_delay(
            attempt, self.retries + 1, retryable=True, retry_after=floor or None
        )
        left = call_time_left(self.clock)
        if delay is None or (left is not None and delay * 2 > left):
            return None
        return delay
