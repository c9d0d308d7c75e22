"""The served models as the API sees them: their configs and model cards, nothing loaded.

A card (endpoints, context window, token counter) comes from the model's provider plugin and is
made on first use; a counter may load a tokenizer, never weights. Whether a model has a circuit
breaker is read from its config, so listing breakers builds no stack either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from genspool.config import (
    ANSWER_MODEL,
    FANOUT_MODEL,
    INTERNAL_MODELS,
    WEBHOOK_MODEL,
    ModelConfig,
    check_fallbacks,
)
from genspool.exceptions import UnknownModel
from genspool.providers.plugins import ModelCard, get_plugin
from genspool.resilience.compose import breaker_on
from genspool.resilience.shared import Shared

__all__ = ["ModelCatalog"]


class ModelCatalog:
    """``shared`` (the storage's limits and key-value records) is where the workers' breakers
    write their states; without it, this process's memory."""

    def __init__(self, configs: Iterable[ModelConfig], *, shared: Shared | None = None) -> None:
        self.configs = {c.name: c for c in configs}
        check_fallbacks(self.configs.values())
        for internal in (FANOUT_MODEL, WEBHOOK_MODEL, ANSWER_MODEL):  # every deployment runs these
            if internal["name"] not in self.configs:
                self.configs[internal["name"]] = ModelConfig.model_validate(internal)
        self.shared: Shared = shared if shared is not None else Shared.local()
        self._cards: dict[str, ModelCard] = {}

    def __iter__(self) -> Iterator[ModelConfig]:
        return iter(self.configs.values())

    def config(self, name: str) -> ModelConfig:
        try:
            return self.configs[name]
        except KeyError:
            known = ", ".join(sorted(set(self.configs) - INTERNAL_MODELS)) or "none"
            raise UnknownModel(f"unknown model {name!r}; this server has: {known}") from None

    def card(self, name: str) -> ModelCard:
        if name not in self._cards:
            cfg = self.config(name)
            self._cards[name] = get_plugin(cfg.provider).model_card(cfg)
        return self._cards[name]

    def has_breaker(self, name: str) -> bool:
        return breaker_on(self.config(name))

    async def aclose(self) -> None:
        for card in self._cards.values():
            if card.close is not None:
                card.close()
        self._cards.clear()
