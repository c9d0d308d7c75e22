"""Routing by model name for workers: each model's provider inside its resilience layers.

A provider is made by its plugin (:mod:`genspool.providers.plugins`) on first use and wrapped by
:func:`~genspool.resilience.compose.build_stack`: what :meth:`ModelRegistry.provider` returns is
the model's whole stack. It satisfies :class:`genspool.core.models.Models`, what a worker needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from genspool.config import ModelConfig
from genspool.exceptions import ConfigError
from genspool.providers.base import Provider
from genspool.providers.plugins import get_plugin
from genspool.resilience.compose import build_stack
from genspool.resilience.shared import Shared
from genspool.runtime.catalog import ModelCatalog

__all__ = ["ModelRegistry", "build_provider"]


def build_provider(cfg: ModelConfig, env: Mapping[str, str] | None = None) -> Provider:
    """The bare provider of one model, by its plugin; a missing dependency names its extra."""
    plugin = get_plugin(cfg.provider)
    try:
        return plugin.create(cfg, env or {})
    except ImportError as exc:
        hint = f' (pip install "genspool[{plugin.extra}]")' if plugin.extra else ""
        raise ConfigError(f"model {cfg.name!r} needs {exc.name}{hint}") from exc


class ModelRegistry(ModelCatalog):
    """The served models; a provider (inside its resilience layers) is built on first use.

    ``env`` maps the names of environment variables the models' options refer to (API keys) to
    their values; the caller passes it (the CLI passes the process environment), so the library
    never reads ``os.environ`` itself. ``backend`` holds the rate limits and breaker states
    shared by every process; without it they live in this process only.
    """

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        env: Mapping[str, str] | None = None,
        *,
        backend: Shared | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(configs, shared=backend)
        self._env = dict(env or {})
        self._providers: dict[str, Provider] = {}
        self.clock = clock

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            cfg = self.config(name)
            self._providers[name] = build_stack(
                cfg,
                build_provider(cfg, self._env),
                shared=self.shared,
                clock=self.clock,
                resolve=self.provider,
            )
        return self._providers[name]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
        await super().aclose()
