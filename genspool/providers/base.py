"""The provider interface: a model behind one batch method, like an httpx transport.

A provider serves some endpoints (``/v1/chat/completions``, ``/v1/embeddings``, ...) of one
configured model. The worker hands it a batch of requests of one endpoint; it returns, per
request, the OpenAI response body or the :class:`~genspool.exceptions.ModelError` that request
ended with. Routing by model name lives outside (``genspool.runtime.registry``); how a provider
is found and configured is :mod:`genspool.providers.plugins`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from genspool.exceptions import ModelError

__all__ = ["CHAT", "EMBEDDINGS", "Provider", "Request", "Response", "TokenSink"]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

#: Called with each piece of generated text while a request runs (may be called from a thread).
TokenSink = Callable[[str], None]
Response = dict[str, Any]


@dataclass(slots=True)
class Request:
    url: str
    body: dict[str, Any]
    on_token: TokenSink | None = None
    #: Prompt tokens as counted once when the job was accepted (the API's model card); None
    #: when the model's tokenizer could not count them.
    prompt_tokens: int | None = None


class Provider(ABC):
    #: The endpoints this model serves (a class default; an instance may narrow it).
    endpoints: frozenset[str] = frozenset()

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        """Run one batch of requests of one endpoint as one model call where possible."""

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        """Prompt tokens of a request by the model's own tokenizer; None when unknown."""
        return None

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights before the first batch (workers call it at start)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""
