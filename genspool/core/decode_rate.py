"""Each model's measured decode rate: tokens per second that one chat request gets, as the
workers observe it, published in the key-value store for the API processes to read.

The API refuses a chat request whose ``max_tokens`` cannot be generated within the model's
``timeout_s`` at this rate (:mod:`genspool.api.feasibility`). The rate is a request's completion
tokens over the time from its start to its answer (prefill and batching included: what a job
actually gets under the current load), averaged over recent jobs; answers of fewer than
``MIN_TOKENS`` tokens say more about prefill than decoding and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from genspool.core.roles import KeyValue

__all__ = ["MIN_TOKENS", "NAMESPACE", "DecodeRates", "completion_tokens", "read_rate"]

#: Key-value namespace of the published rates; the key is the model name.
NAMESPACE = "decode_rate"
MIN_TOKENS = 16


class DecodeRates:
    """Recent decode rates per model (an exponential average), published every ``publish_s``."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        weight: float = 0.2,
        publish_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv, self.weight, self.publish_s, self.clock = kv, weight, publish_s, clock
        self.rates: dict[str, float] = {}
        self._published: dict[str, float] = {}

    def observe(self, model: str, tokens: int, seconds: float) -> None:
        if tokens < MIN_TOKENS or seconds <= 0:
            return
        rate = tokens / seconds
        before = self.rates.get(model)
        self.rates[model] = rate if before is None else before + self.weight * (rate - before)

    async def publish(self) -> None:
        """Write the rates that changed and are due (one small write per model)."""
        t = self.clock()
        for model, rate in self.rates.items():
            if t - self._published.get(model, 0.0) >= self.publish_s:
                value = orjson.dumps({"tokens_per_s": rate, "at": t})
                await self.kv.kv_put(NAMESPACE, model, value)
                self._published[model] = t


def completion_tokens(result: dict[str, object]) -> int | None:
    """Completion tokens of a chat answer, if it says."""
    usage = result.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


async def read_rate(kv: KeyValue, model: str) -> float | None:
    """The published rate of ``model``; None when no worker has measured one."""
    raw = await kv.kv_get(NAMESPACE, model)
    if raw is None:
        return None
    try:
        rate = orjson.loads(raw).get("tokens_per_s")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(rate) if isinstance(rate, int | float) and rate > 0 else None
