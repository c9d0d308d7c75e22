"""Backends, chosen by URL scheme and imported lazily, and the composition of their roles.

:func:`open_storage` gives the :class:`~genspool.core.roles.Storage` of a deployment: every
role from the backend at ``url``, or, with a different ``queue_url``, the queue, coordination
and signals from that one and the store and key-value from ``url``. A backend whose driver is
an optional extra raises :class:`~genspool.exceptions.ConfigError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from genspool.backends._urls import shown_url
from genspool.core.roles import JobFilter, Storage
from genspool.exceptions import ConfigError

__all__ = ["SCHEMES", "JobFilter", "Storage", "backend_from_url", "open_storage", "shown_url"]

#: scheme -> ("module:Class", extra that installs its driver)
SCHEMES: dict[str, tuple[str, str | None]] = {
    "memory": ("genspool.backends.memory:MemoryBackend", None),
    "sqlite": ("genspool.backends.sqlite:SQLiteBackend", None),
    "postgresql": ("genspool.backends.postgres:PostgresBackend", "postgres"),
    "postgres": ("genspool.backends.postgres:PostgresBackend", "postgres"),
    "redis": ("genspool.backends.redis:RedisBackend", "redis"),
    "nats": ("genspool.backends.nats:NatsBackend", "nats"),
}


def open_storage(url: str, *, queue_url: str | None = None) -> Storage:
    """The storage roles at ``url``; with a different ``queue_url``, jobs move on that server
    and their record, API keys and breaker states stay at ``url``."""
    store = backend_from_url(url)
    if not queue_url or queue_url == url:
        return Storage.of(store)
    queue = backend_from_url(queue_url)
    return Storage(queue=queue, store=store, coordination=queue, kv=store, signals=queue)


def backend_from_url(url: str) -> Any:
    """The backend object at ``url`` (it fills every role)."""
    scheme = url.partition("://")[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(
            f"unsupported database URL {shown_url(url)!r}: the scheme must be one of {known}"
        )
    target, extra = SCHEMES[scheme]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f'; install it with pip install "genspool[{extra}]"' if extra else ""
        raise ConfigError(f"the {scheme}:// backend needs {exc.name}{hint}") from exc
    return getattr(module, cls_name).from_url(url)
