"""Providers as plugins: what a provider package declares, and how genspool finds it.

A provider is found by name through the entry point group ``genspool.providers``; the built-in
ones are declared in genspool's own ``pyproject.toml`` exactly as a third-party package would::

    [project.entry-points."genspool.providers"]
    openai = "genspool.providers.openai_http:plugin"

The object named is a :class:`ProviderPlugin`: the provider's own config section (a pydantic
model validating the ``options:`` of a model in the models file), the endpoints it serves, a
factory for the provider and, where it can, a :class:`ModelCard` that describes a model without
loading its weights (the API process validates requests with cards only).

Entry points are read once per process; a plugin's module is imported only when a model names
it, so an unused provider's dependencies are never imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from genspool._entry import find
from genspool.exceptions import ConfigError
from genspool.providers.base import Provider

__all__ = [
    "GROUP",
    "ModelCard",
    "ModelSpec",
    "ProviderOptions",
    "ProviderPlugin",
    "TokenCounter",
    "get_plugin",
    "known_providers",
    "options_of",
]


class _Batching(Protocol):
    @property
    def max_batch_size(self) -> int: ...


class _Limits(Protocol):
    @property
    def call_timeout(self) -> float: ...


class ModelSpec(Protocol):
    """What a plugin reads of a model's configuration (:class:`genspool.config.ModelConfig`
    has it): providers stay below the config in the package layers."""

    @property
    def name(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    @property
    def endpoints(self) -> list[str] | None: ...

    @property
    def options(self) -> ProviderOptions: ...

    @property
    def batching(self) -> _Batching: ...

    @property
    def limits(self) -> _Limits: ...


GROUP = "genspool.providers"
OptionsT = TypeVar("OptionsT", bound="ProviderOptions")


class ProviderOptions(BaseModel):
    """Base of a provider's own config section (a model's ``options:``); unknown keys are
    errors, so a typo is reported rather than ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenCounter(Protocol):
    """Tokens of each input of a request, by the model's own tokenizer: one number for a chat
    prompt, one per text of an embeddings input; None when this request cannot be counted."""

    def __call__(self, url: str, body: dict[str, Any]) -> list[int] | None: ...


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the API needs to know of a model to accept a request for it; no weights loaded."""

    name: str
    endpoints: frozenset[str]
    context_window: int
    count: TokenCounter | None = None
    #: The only size of the vectors it returns (embedding models); None: any size is asked of
    #: the model itself.
    dimensions: int | None = None
    #: Frees what the counter holds (a tokenizer), when anything.
    close: Callable[[], None] | None = None
    #: What it honours beyond the basic parameters (``genspool.api.validation.BASICS``):
    #: parameter names, or ``name:value`` for one kind of ``response_format``/``tool_choice``.
    #: The API refuses anything else with a 400 naming it. None: every parameter goes to a
    #: server that decides (an OpenAI-compatible upstream).
    features: frozenset[str] | None = frozenset()
    #: ``check(url, body)`` raises :class:`~genspool.exceptions.InvalidRequest` for a value
    #: the model cannot follow (e.g. a JSON schema its grammar converter refuses).
    check: Callable[[str, dict[str, Any]], None] | None = None


Factory = Callable[[ModelSpec, Mapping[str, str]], Provider]
CardMaker = Callable[[ModelSpec], ModelCard]


@dataclass(frozen=True, slots=True)
class ProviderPlugin:
    """A provider as genspool sees it; a package exposes one through an entry point."""

    name: str
    #: Validates the model's ``options:`` section.
    options: type[ProviderOptions]
    #: Endpoints a model of this provider serves unless its config narrows them.
    endpoints: frozenset[str]
    #: ``create(config, env)``: the provider for one model; ``env`` maps names of environment
    #: variables (API keys) to values, as the caller chose to pass them.
    create: Factory
    #: A card without loading weights; by default one with no token counter.
    card: CardMaker | None = None
    #: A model behind a network call: each request is its own call, the circuit breaker and
    #: in-call retries are on by default, and ``endpoints`` may name any URL.
    remote: bool = False
    #: The genspool extra that installs what ``create`` imports, named when it is missing.
    extra: str | None = None

    def served(self, config: ModelSpec) -> frozenset[str]:
        return frozenset(config.endpoints) if config.endpoints else self.endpoints

    def model_card(self, config: ModelSpec) -> ModelCard:
        if self.card is not None:
            return self.card(config)
        features = None if self.remote else frozenset[str]()
        return ModelCard(config.name, self.served(config), config.context_window, features=features)


def options_of(config: ModelSpec, kind: type[OptionsT]) -> OptionsT:
    """The model's ``options`` as the provider's own type (for its factory and card)."""
    if not isinstance(config.options, kind):
        raise ConfigError(f"model {config.name!r}: options are not {kind.__name__}")
    return config.options


@functools.cache
def _entry_points() -> dict[str, Any]:
    """Every installed provider's entry point (this scans the installed packages: slow)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_providers() -> list[str]:
    return sorted(_entry_points())


@functools.cache
def get_plugin(name: str) -> ProviderPlugin:
    """The plugin registered as ``name``; a :class:`ConfigError` names the known ones."""
    found = find(GROUP, name) or _entry_points().get(name)
    if found is None:
        raise ConfigError(f"unknown provider {name!r}; known providers: {_known()}")
    try:
        plugin = found.load()
    except ImportError as exc:
        raise ConfigError(f"provider {name!r} ({found.value}) cannot be imported: {exc}") from exc
    if not isinstance(plugin, ProviderPlugin) or plugin.name != name:
        raise ConfigError(f"entry point {name} = {found.value} is not a ProviderPlugin({name!r})")
    return plugin


#: Providers genspool runs for itself (fan-out parents, webhook deliveries, agents made from
#: the ``agents:`` section), which a models file does not name: not offered in errors.
INTERNAL_PROVIDERS = frozenset({"fanout", "webhook", "agent", "answer"})


def _known() -> str:
    names: Sequence[str] = [n for n in known_providers() if n not in INTERNAL_PROVIDERS]
    if not names:
        return 'none (genspool\'s own entry points are missing: pip install -e "." again)'
    return ", ".join(names)
