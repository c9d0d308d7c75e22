"""Refusing at the door a chat request that cannot finish in time.

A chat request asks for up to ``max_tokens`` (or ``max_completion_tokens``); its job is failed
with a timeout if the model has not answered within the model's ``timeout_s``. The workers
measure each model's decode rate (tokens per second one request gets, under the current load)
and publish it in the key-value store (:mod:`genspool.core.decode_rate`). A request whose
``max_tokens`` would take longer than ``timeout_s`` at that rate is refused here with a 400 that
names the three numbers, rather than queued to time out. Without a measurement yet, nothing is
refused.

The check sits on the submit path and must not wait for the store: it reads a per-model cache,
refreshed in the background when it is older than ``ttl_s`` (a few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from genspool.config import ModelConfig
from genspool.core.decode_rate import read_rate
from genspool.core.roles import KeyValue
from genspool.exceptions import InvalidRequest
from genspool.providers.base import CHAT

__all__ = ["DecodeRateCache", "check_feasible"]

log = logging.getLogger("genspool.feasibility")


class DecodeRateCache:
    """The published decode rates of one store, each read at most once per ``ttl_s``."""

    def __init__(
        self, kv: KeyValue, *, ttl_s: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kv, self.ttl_s, self.clock = kv, ttl_s, clock
        self._rates: dict[str, tuple[float | None, float]] = {}  # model -> (rate, read at)
        self._reading: dict[str, asyncio.Task[None]] = {}

    def rate(self, model: str) -> float | None:
        """The cached rate (None: not measured, or not read yet); starts a refresh when stale."""
        rate, at = self._rates.get(model, (None, float("-inf")))
        if self.clock() - at >= self.ttl_s and model not in self._reading:
            task = asyncio.get_running_loop().create_task(self.refresh(model))
            self._reading[model] = task
            task.add_done_callback(lambda _: self._reading.pop(model, None))
        return rate

    async def refresh(self, model: str) -> None:
        try:
            rate = await read_rate(self.kv, model)
        except Exception as exc:  # keep what we had; the store may come back
            log.warning("could not read the decode rate of %s: %s", model, exc)
            return
        self._rates[model] = (rate, self.clock())


_caches: weakref.WeakKeyDictionary[KeyValue, DecodeRateCache] = weakref.WeakKeyDictionary()


def check_feasible(kv: KeyValue, cfg: ModelConfig, url: str, body: dict[str, Any]) -> None:
    """Raise :class:`InvalidRequest` (400) if the chat request ``body`` asks for more tokens
    than ``cfg``'s model can generate within its ``timeout_s`` at its measured rate."""
    if url != CHAT:
        return
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return  # absent (the model's default) or invalid (the model says why)
    cache = _caches.get(kv)
    if cache is None:
        cache = _caches[kv] = DecodeRateCache(kv)
    rate = cache.rate(cfg.name)
    timeout_s = cfg.limits.timeout_s
    if rate is None or max_tokens <= rate * timeout_s:
        return
    raise InvalidRequest(
        f"{key}={max_tokens} cannot finish within model {cfg.name}'s timeout_s={timeout_s:g}:"
        f" it generates about {rate:.1f} tokens/s per request (measured), so at most"
        f" {int(rate * timeout_s)} tokens fit; ask for fewer",
        param=key,
    )
