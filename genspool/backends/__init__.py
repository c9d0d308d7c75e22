"""Backends, chosen by URL scheme and imported lazily, and the composition of their roles.

:func:`open_storage` gives the :class:`~genspool.core.roles.Storage` of a deployment: every
role from the backend at ``url``, or, with a different ``queue_url``, the queue, coordination
and signals from that one and the store, key-value, routes, files and batches from ``url``. A
backend whose driver is an optional extra raises :class:`~genspool.exceptions.ConfigError`
naming the extra to install.
"""

from __future__ import annotations

import functools
from typing import Any

from genspool._entry import Ref, find
from genspool.backends._urls import shown_url
from genspool.core.roles import (
    BatchStore,
    ChunkStore,
    DriftSamples,
    FileStore,
    JobFilter,
    PipelineStore,
    PromptStore,
    Storage,
    VectorStoreRecords,
    WebhookStore,
)
from genspool.exceptions import ConfigError

__all__ = ["GROUP", "JobFilter", "Storage", "backend_from_url", "open_storage", "shown_url"]

#: Entry point group: URL scheme -> "module:Class [extra]", the extra installing its driver.
#: genspool's own are declared in its pyproject.toml; another package may add schemes.
GROUP = "genspool.backends"


@functools.cache
def schemes() -> dict[str, Any]:
    """Every installed scheme's entry point (this scans the installed packages: slow)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _scheme(name: str) -> Ref | Any | None:
    return find(GROUP, name) or schemes().get(name)


def open_storage(url: str, *, queue_url: str | None = None) -> Storage:
    """The storage roles at ``url``; with a different ``queue_url``, jobs move on that server
    and their record, API keys, breaker states and routes stay at ``url``."""
    store = backend_from_url(url)
    if not queue_url or queue_url == url:
        return Storage.of(store)
    queue = backend_from_url(queue_url)
    return Storage(
        queue=queue, store=store, coordination=queue, kv=store, signals=queue, routes=store,
        files=store if isinstance(store, FileStore) else None,
        batches=store if isinstance(store, BatchStore) else None,
        webhooks=store if isinstance(store, WebhookStore) else None,
        pipelines=store if isinstance(store, PipelineStore) else None,
        vectors=store if isinstance(store, VectorStoreRecords) else None,
        chunks=store if isinstance(store, ChunkStore) else None,
        prompts=store if isinstance(store, PromptStore) else None,
        drift=store if isinstance(store, DriftSamples) else None,
    )  # fmt: skip


def backend_from_url(url: str) -> Any:
    """The backend object at ``url`` (it fills every role)."""
    scheme = url.partition("://")[0].split("+", 1)[0] if "://" in url else ""
    found = _scheme(scheme)
    if found is None:
        known = ", ".join(f"{s}://" for s in sorted(schemes()))
        raise ConfigError(
            f"unsupported database URL {shown_url(url)!r}: the scheme must be one of {known}"
        )
    try:
        cls = found.load()
    except ImportError as exc:
        extra = found.extras[0] if found.extras else None
        hint = f'; install it with pip install "genspool[{extra}]"' if extra else ""
        raise ConfigError(f"the {scheme}:// backend needs {exc.name}{hint}") from exc
    return cls.from_url(url)
