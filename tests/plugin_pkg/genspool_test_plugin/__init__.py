"""A provider from outside genspool (a test, named as such): ``provider: reverse`` answers a
chat with its last user message reversed, plus ``options.suffix``.

Its model card counts a prompt's characters, so a test can see that the count taken by the API
is the one the provider is handed (``Request.prompt_tokens``) and reports as usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genspool.config import ModelConfig
from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, Provider, Request, Response
from genspool.providers.plugins import ModelCard, ProviderOptions, ProviderPlugin, options_of
from genspool.providers.shapes import chat_completion

__all__ = ["ReverseOptions", "ReverseProvider", "plugin"]


class ReverseOptions(ProviderOptions):
    suffix: str = ""


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def count_chars(url: str, body: dict[str, Any]) -> list[int] | None:
    if url != CHAT:
        return None
    return [sum(len(str(m.get("content", ""))) for m in body.get("messages", []))]


class ReverseProvider(Provider):
    endpoints = frozenset({CHAT})

    def __init__(self, model: str, *, suffix: str = "") -> None:
        super().__init__(model)
        self.suffix = suffix

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        return [self._answer(r) for r in batch]

    def _answer(self, request: Request) -> Response:
        text = _last_user(request.body)[::-1] + self.suffix
        return chat_completion(
            self.model,
            text,
            prompt_tokens=request.prompt_tokens if request.prompt_tokens is not None else -1,
            completion_tokens=len(text),
            finish_reason="stop",
        )


def _create(config: ModelConfig, env: Mapping[str, str]) -> ReverseProvider:
    return ReverseProvider(config.name, suffix=options_of(config, ReverseOptions).suffix)


def _card(config: ModelConfig) -> ModelCard:
    return ModelCard(config.name, plugin.served(config), config.context_window, count_chars)


plugin = ProviderPlugin(
    name="reverse",
    options=ReverseOptions,
    endpoints=frozenset({CHAT}),
    create=_create,
    card=_card,
)
