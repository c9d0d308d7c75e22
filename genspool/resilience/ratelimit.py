"""Per-model request and token budgets (``rpm``, ``tpm``), shared by every process.

Each batch reserves ``len(batch)`` from the bucket ``rpm:<model>`` and its tokens from
``tpm:<model>`` through the backend's atomic GCRA reservation, so all workers together stay
under the limits. A bucket holds one minute's budget (a burst of up to ``rpm`` requests is
allowed after a quiet minute) and refills continuously. Tokens of a request: its prompt as
counted when the job was accepted (``Request.prompt_tokens``; the prompt is not tokenized again
here), else by the provider, else about four characters a token; plus its ``max_tokens`` (or
``default_completion_tokens``) for chat.

When a reservation is refused, the batch *waits* for it — as long as the job's deadline leaves
``reserve_s`` for the call afterwards. Past that, the batch is not sent: each request gets a
retryable :class:`~genspool.exceptions.ModelRateLimited` with ``retry_after`` = the wait, and
the queue brings the job back then, without using up one of its attempts (nothing was sent;
``ModelRateLimited.counts_as_attempt`` is False). The request budget is
taken first; if the token budget then refuses, the requests already counted stay counted — the
limiter errs on the slow side.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from genspool.exceptions import ModelRateLimited
from genspool.providers.base import CHAT, Provider, Request
from genspool.resilience.layer import Layer, Result
from genspool.resilience.shared import Shared
from genspool.resilience.timeout import job_time_left

__all__ = ["RateLimit", "request_tokens"]

log = logging.getLogger("genspool.resilience.ratelimit")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def request_tokens(provider: Provider, request: Request, default_completion: int) -> int:
    prompt = request.prompt_tokens
    if prompt is None:
        prompt = provider.count_tokens(request.url, request.body)
    if prompt is None:
        text = request.body.get("messages", request.body.get("input", ""))
        prompt = len(orjson.dumps(text)) // 4 + 1
    if request.url != CHAT:
        return prompt
    body: dict[str, Any] = request.body
    completion = body.get("max_tokens") or body.get("max_completion_tokens")
    return prompt + (int(completion) if completion else default_completion)


class RateLimit(Layer):
    def __init__(
        self,
        inner: Provider,
        *,
        shared: Shared,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        max_wait_s: float = 60.0,
        reserve_s: float = 0.0,
        default_completion_tokens: int = 256,
    ) -> None:
        """``max_wait_s`` bounds a wait outside any job deadline; ``reserve_s`` is the time a
        wait must leave before the deadline for the call itself."""
        super().__init__(inner)
        self.shared, self.rpm, self.tpm = shared, rpm, tpm
        self.clock, self.sleep = clock, sleep
        self.max_wait_s, self.reserve_s = max_wait_s, reserve_s
        self.default_completion_tokens = default_completion_tokens
        #: Waits for budget by limit (``rpm``, ``tpm``): how many, and seconds (for metrics).
        self.waits: Counter[str] = Counter()
        self.waited_s: dict[str, float] = {}

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        for key, cost, per_minute in self._costs(batch):
            refused = await self._take(key, cost, per_minute, len(batch))
            if refused is not None:
                return [refused] * len(batch)
        return await self.inner.handle(batch)

    def _costs(self, batch: Sequence[Request]) -> list[tuple[str, float, int]]:
        costs: list[tuple[str, float, int]] = []
        if self.rpm:
            costs.append((f"rpm:{self.model}", float(len(batch)), self.rpm))
        if self.tpm:
            n = self.default_completion_tokens
            tokens = sum(request_tokens(self.inner, r, n) for r in batch)
            costs.append((f"tpm:{self.model}", float(tokens), self.tpm))
        return costs

    async def _take(
        self, key: str, cost: float, per_minute: int, n: int
    ) -> ModelRateLimited | None:
        """Reserve ``cost`` from ``key``, waiting while the deadline allows; the refusal else."""
        while True:
            wait = await self.shared.limits.reserve(
                key, cost, per_minute / 60, per_minute, self.clock()
            )
            if wait <= 0:
                return None
            if wait > self._may_wait():
                what = key.split(":", 1)[0]
                return ModelRateLimited(
                    f"model {self.model}: over its {what} limit ({per_minute}/min); "
                    f"not called, retry in {wait:.1f} s",
                    retry_after=wait,
                )
            log.info(
                "model %s: over its %s limit (%d/min); %d request(s) wait %.2f s for budget",
                self.model, key.split(":", 1)[0], per_minute, n, wait,
            )  # fmt: skip
            what = key.split(":", 1)[0]
            self.waits[what] += 1
            self.waited_s[what] = self.waited_s.get(what, 0.0) + wait
            await self.sleep(wait)

    def _may_wait(self) -> float:
        left = job_time_left(self.clock)
        return self.max_wait_s if left is None else min(self.max_wait_s, left - self.reserve_s)
