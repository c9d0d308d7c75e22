"""Queue/store backends, chosen by URL scheme and imported lazily.

A backend whose driver is an optional extra raises :class:`~genspool.exceptions.ConfigError`
naming the extra to install when its driver is missing.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit, urlunsplit

from genspool.backends.base import Backend, JobFilter
from genspool.exceptions import ConfigError

__all__ = ["SCHEMES", "Backend", "JobFilter", "backend_from_url", "shown_url"]

#: scheme -> ("module:Class", extra that installs its driver)
SCHEMES: dict[str, tuple[str, str | None]] = {
    "sqlite": ("genspool.backends.sqlite:SQLiteBackend", None),
    "postgresql": ("genspool.backends.postgres:PostgresBackend", "postgres"),
    "postgres": ("genspool.backends.postgres:PostgresBackend", "postgres"),
    "redis": ("genspool.backends.redis:RedisBackend", "redis"),
    "nats": ("genspool.backends.nats:NatsBackend", "nats"),
}


def backend_from_url(url: str, *, queue_url: str | None = None) -> Backend:
    """The backend at ``url``; with a different ``queue_url``, the queue lives there and
    ``url`` keeps the store (:class:`~genspool.backends.split.SplitBackend`)."""
    if queue_url and queue_url != url:
        from genspool.backends.split import SplitBackend

        return SplitBackend(queue=_one(queue_url), store=_one(url))
    return _one(url)


def _one(url: str) -> Backend:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(f"unsupported database URL {url!r}: the scheme must be one of {known}")
    target, extra = SCHEMES[scheme]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f'; install it with pip install "genspool[{extra}]"' if extra else ""
        raise ConfigError(f"the {scheme}:// backend needs {exc.name}{hint}") from exc
    backend: Backend = getattr(module, cls_name).from_url(url)
    return backend


def shown_url(url: str) -> str:
    """``url`` fit to print: its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))
