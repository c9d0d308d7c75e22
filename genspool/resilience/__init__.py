"""Resilience around every model call, as composable provider layers.

Each layer wraps a :class:`~genspool.providers.base.Provider` and is one: a deadline, fallbacks,
a circuit breaker, a shared rate limit, a call timeout and in-call retries. Each takes its clock
(and, where it waits, its ``sleep``) as arguments so tests need not sleep.
:func:`~genspool.resilience.compose.build_stack` puts them together for one model, in the order
documented there; the model registry calls it for every model it serves.
"""

from genspool.resilience.breaker import NAMESPACE, Breaker, BreakerLayer, BreakerPolicy, State
from genspool.resilience.compose import build_stack
from genspool.resilience.fallback import Fallback
from genspool.resilience.layer import Layer, PerRequest, find_layer
from genspool.resilience.ratelimit import RateLimit
from genspool.resilience.retry import InCallRetry
from genspool.resilience.shared import LocalShared, Shared
from genspool.resilience.timeout import CallTimeout, JobDeadline

__all__ = [
    "NAMESPACE",
    "Breaker",
    "BreakerLayer",
    "BreakerPolicy",
    "CallTimeout",
    "Fallback",
    "InCallRetry",
    "JobDeadline",
    "Layer",
    "LocalShared",
    "PerRequest",
    "RateLimit",
    "Shared",
    "State",
    "build_stack",
    "find_layer",
]
