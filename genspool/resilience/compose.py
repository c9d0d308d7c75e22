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

The breaker is on by default for remote providers (a plugin with ``remote=True``, such as
``provider: openai``) only: a model running in this process has no endpoint to protect, and its
failures are its jobs'. ``breaker: {enabled: true}`` turns it on for any model. In-call retries
likewise default to 2 for remote providers and 0 for local ones (``limits.call_retries``).
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

__all__ = ["breaker_on", "breaker_policy", "build_stack", "call_retries"]

#: In-call retries of a remote provider unless ``limits.call_retries`` says otherwise.
REMOTE_CALL_RETRIES = 2


def breaker_policy(cfg: ModelConfig) -> BreakerPolicy:
    b = cfg.breaker
    return BreakerPolicy(
        failures=b.failures,
        failure_ratio=b.failure_ratio,
        min_calls=b.min_calls,
        window_s=b.window_s,
        cooldown_s=b.cooldown_s,
        probes=b.probes,
    )


def breaker_on(cfg: ModelConfig) -> bool:
    """Whether the model's stack has a circuit breaker (readable without building it)."""
    return cfg.remote if cfg.breaker.enabled is None else cfg.breaker.enabled


def call_retries(cfg: ModelConfig) -> int:
    retries = cfg.limits.call_retries
    return (REMOTE_CALL_RETRIES if cfg.remote else 0) if retries is None else retries


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
    limits = cfg.limits
    stack = provider
    retries = call_retries(cfg)
    if retries or cfg.remote:  # a remote's Retry-After is kept here even without retries
        stack = InCallRetry(stack, retries=retries, clock=clock, sleep=sleep)
    # End a call a little before the worker's own timeout_s would cancel it.
    margin_s = min(0.05 * limits.timeout_s, 0.25)
    stack = CallTimeout(stack, call_timeout_s=limits.call_timeout, clock=clock, margin_s=margin_s)
    if cfg.remote:
        stack = PerRequest(stack)
    if limits.rpm or limits.tpm:
        stack = RateLimit(
            stack,
            shared=shared,
            rpm=limits.rpm,
            tpm=limits.tpm,
            clock=clock,
            sleep=sleep,
            max_wait_s=limits.timeout_s,
            reserve_s=min(limits.call_timeout, limits.timeout_s / 2),
        )
    if breaker_on(cfg):
        breaker = Breaker(breaker_policy(cfg), clock)
        stack = BreakerLayer(stack, breaker=breaker, shared=shared)
    if cfg.fallbacks:
        stack = Fallback(stack, fallbacks=cfg.fallbacks, resolve=resolve)
    return JobDeadline(stack, timeout_s=limits.timeout_s, clock=clock)
