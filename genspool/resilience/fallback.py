"""Fallback models: when a model's breaker is open or its call fails retryably, its requests go
to the first of its ``fallbacks`` whose breaker is closed, through that model's own stack (its
limits, breaker, timeouts and retries — and its own fallbacks). If that one fails retryably too,
the next closed one is tried, within the same job deadline. The answer's ``model`` field names
the model that answered. A request every model failed keeps the first model's error, so the job
retries against its own model. Non-retryable errors (a bad request) are never sent elsewhere.

Fallback chains are checked when the models are loaded
(:func:`genspool.config.check_fallbacks`): every name is served and no chain loops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from genspool.core.joblog import reason
from genspool.exceptions import ModelError
from genspool.providers.base import Provider, Request
from genspool.resilience.breaker import BreakerLayer, State
from genspool.resilience.layer import Layer, Result, find_layer

__all__ = ["Fallback", "closed"]

log = logging.getLogger("genspool.resilience.fallback")


def closed(stack: Provider) -> bool:
    """Whether a model's breaker is closed (a stack without one always is)."""
    layer = find_layer(stack, BreakerLayer)
    return layer is None or layer.breaker.state is State.CLOSED


class Fallback(Layer):
    def __init__(
        self, inner: Provider, *, fallbacks: Sequence[str], resolve: Callable[[str], Provider]
    ) -> None:
        """``resolve`` gives a model's whole stack by name (the registry's ``provider``)."""
        super().__init__(inner)
        self.fallbacks, self.resolve = list(fallbacks), resolve

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        results = list(await self.inner.handle(batch))
        for name in self.fallbacks:
            todo = [i for i, r in enumerate(results) if _retryable(r)]
            if not todo:
                break
            stack = self.resolve(name)
            todo = [i for i in todo if batch[i].url in stack.endpoints]
            if not todo or not closed(stack):
                continue
            first = results[todo[0]]
            why = reason(first) if isinstance(first, ModelError) else "failed"
            answers = await stack.handle([batch[i] for i in todo])
            for i, answer in zip(todo, answers, strict=True):
                if not isinstance(answer, ModelError):
                    answer["model"] = name
                    results[i] = answer
            answered = sum(not isinstance(a, ModelError) for a in answers)
            log.info(
                "model %s: %d request(s) sent to fallback model %s (%s); it answered %d",
                self.model, len(todo), name, why, answered,
            )  # fmt: skip
        return results


def _retryable(result: Result) -> bool:
    return isinstance(result, ModelError) and result.retryable
