"""Routing by model name: which provider serves a model, built lazily from its config.

Every provider is served inside its resilience layers (:mod:`genspool.resilience`): what
``ModelRegistry.provider`` returns is the model's whole stack.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from genspool.config import ModelConfig, check_fallbacks
from genspool.exceptions import ConfigError, UnknownModel
from genspool.providers.base import Provider
from genspool.resilience.compose import build_stack
from genspool.resilience.shared import LocalShared, Shared

__all__ = ["ModelRegistry", "build_provider"]

#: provider name -> ("module:Class", extra that installs what it needs)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "llama_cpp": ("genspool.providers.llama:LlamaChatProvider", "local"),
    "onnx_embedding": ("genspool.providers.onnx_embed:OnnxEmbeddingProvider", "local"),
    "openai": ("genspool.providers.openai_http:OpenAIProvider", None),
    "echo": ("genspool.providers.echo:EchoProvider", None),
}


def _provider_kwargs(cfg: ModelConfig, env: dict[str, str]) -> dict[str, Any]:
    if cfg.provider == "llama_cpp":
        return {
            "model_path": cfg.model_path,
            "context_window": cfg.context_window,
            "max_batch_size": cfg.max_batch_size,
            "threads": cfg.threads,
        }
    if cfg.provider == "onnx_embedding":
        return {"model_path": cfg.model_path, "threads": cfg.threads}
    if cfg.provider == "openai":
        key = env.get(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_key_env and key is None:
            raise ConfigError(
                f"model {cfg.name!r}: environment variable {cfg.api_key_env} is not set"
            )
        return {
            "base_url": cfg.base_url,
            "api_key": key,
            "remote_model": cfg.remote_model,
            "endpoints": cfg.endpoints,
            "timeout_s": cfg.call_timeout_s or cfg.timeout_s,
        }
    return {"latency_ms": cfg.latency_ms}


def build_provider(cfg: ModelConfig, env: dict[str, str] | None = None) -> Provider:
    target, extra = PROVIDERS[cfg.provider]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f' (pip install "genspool[{extra}]")' if extra else ""
        raise ConfigError(f"model {cfg.name!r} needs {exc.name}{hint}") from exc
    provider: Provider = getattr(module, cls_name)(cfg.name, **_provider_kwargs(cfg, env or {}))
    return provider


class ModelRegistry:
    """The served models; a provider (inside its resilience layers) is built on first use.

    ``env`` maps the names in ``api_key_env`` to keys; the caller passes it (the CLI passes the
    process environment), so the library never reads ``os.environ`` itself. ``backend`` (any
    :class:`~genspool.resilience.shared.Shared`, e.g. the queue's backend) holds the rate limits
    and breaker states shared by every process; without it they live in this process only.
    """

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        env: dict[str, str] | None = None,
        *,
        backend: Shared | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configs = {c.name: c for c in configs}
        check_fallbacks(self.configs.values())
        self._env = dict(env or {})
        self._providers: dict[str, Provider] = {}
        self.shared: Shared = backend if backend is not None else LocalShared()
        self.clock = clock

    def __iter__(self) -> Iterator[ModelConfig]:
        return iter(self.configs.values())

    def config(self, name: str) -> ModelConfig:
        try:
            return self.configs[name]
        except KeyError:
            known = ", ".join(sorted(self.configs)) or "none"
            raise UnknownModel(f"unknown model {name!r}; this server has: {known}") from None

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
