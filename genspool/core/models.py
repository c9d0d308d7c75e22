"""What the worker needs of the served models, as a protocol, so core never imports how models
are built (``genspool.runtime.ModelRegistry`` satisfies it); and the metadata key under which
the API hands a job's counted prompt tokens to the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from genspool.config import ModelConfig
from genspool.providers.base import Provider
from genspool.providers.plugins import ModelCard

__all__ = [
    "BRANCH",
    "DRIFT",
    "PARENT",
    "PROMPT",
    "PROMPT_TOKENS",
    "RESERVED",
    "SCOPES",
    "TRACEPARENT",
    "Models",
    "prompt_tokens",
]

#: ``Job.metadata`` key: prompt tokens as counted once by the API (the model's own tokenizer),
#: so neither the rate limiter nor anything else in the worker tokenizes the prompt again.
#: Metadata round-trips through every backend; the API overwrites a client's value of this key.
PROMPT_TOKENS = "genspool.prompt_tokens"
#: ``Job.metadata`` key: the scopes of the API key that submitted the job, which an agent's tool
#: calls are checked against and a fan-out's children inherit (the API sets it, like the count).
SCOPES = "genspool.scopes"
#: ``Job.metadata`` keys of a fan-out's child: its parent job's id and its branch's name.
PARENT = "genspool.parent"
BRANCH = "genspool.branch"
#: ``Job.metadata`` key of an embedding job made for a drift sample (genspool.drift.sampler).
DRIFT = "genspool.drift"
#: The keys only genspool writes: the API drops a client's values of them.
#: ``Job.metadata`` key of the stored prompt a job was rendered from, ``{"id", "version"}``
#: (genspool.core.prompts).
PROMPT = "genspool.prompt"
#: ``Job.metadata`` key: the W3C ``traceparent`` of the span that submitted the job, which the
#: worker's batch span links to (genspool.tracing); set only while tracing is on.
TRACEPARENT = "genspool.traceparent"
RESERVED = (PROMPT_TOKENS, SCOPES, PARENT, BRANCH, DRIFT, PROMPT, TRACEPARENT)


class Models(Protocol):
    def __iter__(self) -> Iterator[ModelConfig]: ...

    def config(self, name: str) -> ModelConfig: ...

    def provider(self, name: str) -> Provider: ...

    def card(self, name: str) -> ModelCard: ...


def prompt_tokens(metadata: dict[str, Any]) -> int | None:
    """The count the API stored, if it is one (a client cannot plant anything else here)."""
    value = metadata.get(PROMPT_TOKENS)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
