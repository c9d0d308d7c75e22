"""Entry points of genspool's own plugins, resolved without scanning the installed packages.

Scanning every installed distribution for entry points costs 15-20 ms a group, which a worker
paid at start-up to find the backend and providers that ship with genspool itself. Those are
listed here as well as in ``pyproject.toml`` (a test checks the two agree); the installed
entry points are read only for a name that is not genspool's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN", "Ref", "find"]


@dataclass(frozen=True, slots=True)
class Ref:
    """What an entry point is: ``module:attr [extra, ...]``, loaded on demand."""

    name: str
    value: str

    @property
    def extras(self) -> list[str]:
        _, _, tail = self.value.partition("[")
        return [e.strip() for e in tail.rstrip("] ").split(",") if e.strip()]

    def load(self) -> Any:
        target = self.value.partition("[")[0].strip()
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


BUILTIN: dict[str, dict[str, str]] = {
    "genspool.providers": {
        "llama_cpp": "genspool.providers.local:llama_plugin",
        "onnx_embedding": "genspool.providers.local:onnx_plugin",
        "openai": "genspool.providers.openai_http:plugin",
        "fanout": "genspool.fanout.coordinator:plugin",
        "agent": "genspool.agents.provider:plugin",
        "echo": "genspool.providers.echo:plugin",
        "webhook": "genspool.webhooks.deliver:plugin",
        "answer": "genspool.rag.answer:plugin",
    },
    "genspool.backends": {
        "sqlite": "genspool.backends.sqlite:SQLiteBackend",
        "postgresql": "genspool.backends.postgres:PostgresBackend [postgres]",
        "postgres": "genspool.backends.postgres:PostgresBackend [postgres]",
        "redis": "genspool.backends.redis:RedisBackend [redis]",
        "nats": "genspool.backends.nats:NatsBackend [nats]",
        "memory": "genspool.backends.memory:MemoryBackend",
    },
}


def find(group: str, name: str) -> Ref | None:
    """genspool's own entry point ``name`` of ``group``, if it is one."""
    value = BUILTIN.get(group, {}).get(name)
    return None if value is None else Ref(name, value)
