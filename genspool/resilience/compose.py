"""Builds the stack of layers around one model's provider, in one fixed order, outermost
first::

    JobDeadline      notes when the attempt's ``timeout_s`` runs out (the worker enforces it)
    → Fallback       retryable failures and open breakers go to the ``fallbacks``
    → BreakerLayer   refuses calls while the model's breaker is open
    → RateLimit      waits for the model's ``rpm`` / ``tpm`` budget, shared by all processes
    → PerRequest     remote models: each request of the batch is its own call from here on
    → CallTimeout    ``call_timeout_s`` per call, ended before the job deadline
    → InCallRetry    remote models: ``call_retries`` quick retries inside the call
    → provider

Why this order: a fallback must see the breaker's refusals to route around them; the breaker
sits above the limiter so that an open circuit spends no budget and waiting for budget is not
counted as a failure; the limiter waits before the call timeout starts; the timeout bounds the
in-call retries, and the breaker sees the outcome of a call after its retries.

The breaker is on by default for remote endpoints (``provider: openai``) only: a model running
in this process has no endpoint to protect, and its failures are its jobs'. ``breaker: true``
turns it on for any model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from genspool.config import ModelConfig
from genspool.providers.base import Provider
from genspool.resilience.breaker import Breaker, BreakerLayer, BreakerPolicy
from genspool.resilience.fallback import Fallback
from genspool.resilience.layer import PerRequest
from genspool.resilience.ratelimit import RateLimit
from genspool.resilience.retry import InCallRetry
from genspool.resilience.shared import Shared
from genspool.resilience.timeout import CallTimeout, JobDeadline

__all__ = ["breaker_policy", "build_stack"]

REMOTE = frozenset({"openai"})


def breaker_policy(cfg: ModelConfig) -> BreakerPolicy:
    return BreakerPolicy(
        failures=cfg.breaker_failures,
        failure_ratio=cfg.breaker_failure_ratio,
        min_calls=cfg.breaker_min_calls,
        window_s=cfg.breaker_window_s,
        cooldown_s=cfg.breaker_cooldown_s,
        probes=cfg.breaker_probes,
    )


def build_stack(
    cfg: ModelConfig,
    provider: Provider,
    *,
    shared: Shared,
    clock: Callable[[], float],
    resolve: Callable[[str], Provider],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Provider:
    """``resolve`` gives another model's stack by name (for fallbacks)."""
    remote = cfg.provider in REMOTE
    call_timeout_s = cfg.call_timeout_s or cfg.timeout_s
    stack = provider
    if remote and cfg.call_retries:
        stack = InCallRetry(stack, retries=cfg.call_retries, clock=clock, sleep=sleep)
    # End a call a little before the worker's own timeout_s would cancel it.
    margin_s = min(0.05 * cfg.timeout_s, 0.25)
    stack = CallTimeout(stack, call_timeout_s=call_timeout_s, clock=clock, margin_s=margin_s)
    if remote:
        stack = PerRequest(stack)
    if cfg.rpm or cfg.tpm:
        stack = RateLimit(
            stack,
            shared=shared,
            rpm=cfg.rpm,
            tpm=cfg.tpm,
            clock=clock,
            sleep=sleep,
            max_wait_s=cfg.timeout_s,
            reserve_s=min(call_timeout_s, cfg.timeout_s / 2),
        )
    if remote if cfg.breaker is None else cfg.breaker:
        breaker = Breaker(breaker_policy(cfg), clock)
        stack = BreakerLayer(stack, breaker=breaker, shared=shared)
    if cfg.fallbacks:
        stack = Fallback(stack, fallbacks=cfg.fallbacks, resolve=resolve)
    return JobDeadline(stack, timeout_s=cfg.timeout_s, clock=clock)
