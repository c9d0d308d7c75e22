"""What the worker needs of the served models, as a protocol, so core never imports how models
are built (``genspool.runtime.ModelRegistry`` satisfies it); and the metadata key under which
the API hands a job's counted prompt tokens to the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from genspool.config import ModelConfig
from genspool.providers.base import Provider

__all__ = ["PROMPT_TOKENS", "Models", "prompt_tokens"]

#: ``Job.metadata`` key: prompt tokens as counted once by the API (the model's own tokenizer),
#: so neither the rate limiter nor anything else in the worker tokenizes the prompt again.
#: Metadata round-trips through every backend; the API overwrites a client's value of this key.
PROMPT_TOKENS = "genspool.prompt_tokens"


class Models(Protocol):
    def __iter__(self) -> Iterator[ModelConfig]: ...

    def config(self, name: str) -> ModelConfig: ...

    def provider(self, name: str) -> Provider: ...


def prompt_tokens(metadata: dict[str, Any]) -> int | None:
    """The count the API stored, if it is one (a client cannot plant anything else here)."""
    value = metadata.get(PROMPT_TOKENS)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
