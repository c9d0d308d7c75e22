"""genspool's whole API in one process, for tests: no port, no subprocess, no sleeping.

:func:`serve` builds the app exactly as ``genspool serve`` does (the same
:func:`~genspool.api.deps.build_services` and :func:`~genspool.api.app.create_app`) over the
in-memory backend, runs its lifespan, and hands back an ``httpx.AsyncClient`` whose transport
calls the app directly (like starlette's ``TestClient``, but async, so a test can also await the
queue in between). With ``worker=True`` a worker runs in the same event loop, so submitted jobs
complete; models are plain dicts as in a models file, e.g. ``{"name": "echo", "provider":
"echo"}`` (:mod:`genspool.providers.echo` computes nothing and answers at once).

:class:`FakeClock` is a clock that moves only when told: pass it as ``clock`` and shift it with
:meth:`FakeClock.advance` where a test needs lease expiry, retry backoff, expiry or result TTL.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from genspool.api.app import create_app
from genspool.api.deps import Services, build_services
from genspool.backends import open_storage
from genspool.config import ModelConfig
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.resilience.shared import Shared
from genspool.runtime import ModelCatalog, ModelRegistry

__all__ = ["BASE_URL", "App", "FakeClock", "InProcess", "build", "serve"]

BASE_URL = "http://genspool.test"
HARNESS_HOSTS = ("genspool.test", "testserver")


class FakeClock:
    """Unix time that stands still until :meth:`advance` moves it (starts at the real now)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now


@dataclass(frozen=True, slots=True)
class App:
    """An app built as ``genspool serve`` builds it, with its parts; nothing started yet."""

    app: FastAPI
    services: Services
    worker: Worker | None

    @property
    def queue(self) -> Queue:
        return self.services.queue


@dataclass(frozen=True, slots=True)
class InProcess(App):
    """A running app and a client that calls it directly."""

    client: httpx.AsyncClient


def models_of(models: Iterable[ModelConfig | Mapping[str, Any]]) -> list[ModelConfig]:
    return [m if isinstance(m, ModelConfig) else ModelConfig.model_validate(m) for m in models]


def build(
    models: Iterable[ModelConfig | Mapping[str, Any]],
    *,
    url: str | None = None,
    worker: bool = False,
    clock: Callable[[], float] = time.time,
    retry: RetryPolicy | None = None,
    lease_s: float = 30.0,
    **options: Any,
) -> App:
    """The app over ``url`` (default: a fresh ``memory://`` store), with a worker in the same
    event loop when ``worker`` is true. ``options`` go to
    :func:`~genspool.api.deps.build_services` (``max_body_bytes``, ``key_cache_s``,
    ``wait_timeout_s``, ``admission_refresh_s``)."""
    storage = open_storage(url or f"memory://inprocess-{uuid.uuid4().hex[:12]}")
    queue = Queue(storage, retry=retry, lease_s=lease_s, clock=clock)
    shared = Shared(storage.coordination, storage.kv)
    configs = models_of(models)
    catalog = (
        ModelRegistry(configs, backend=shared, clock=clock)
        if worker
        else ModelCatalog(configs, shared=shared)
    )
    services = build_services(queue, catalog, **options)
    runner = (
        Worker(queue, catalog, maintain_s=0.05, files=services.files)
        if isinstance(catalog, ModelRegistry)
        else None
    )
    # The names this harness's clients use (httpx here, starlette's TestClient): not loopback.
    app = create_app(services, worker=runner, allowed_hosts=HARNESS_HOSTS)
    return App(app, services, runner)


@contextlib.asynccontextmanager
async def serve(
    models: Iterable[ModelConfig | Mapping[str, Any]],
    *,
    headers: Mapping[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[InProcess]:
    """:func:`build` the app, run its lifespan, and yield it with an ``httpx.AsyncClient``
    whose transport calls it directly; the in-memory store is dropped at the end."""
    built = build(models, **options)
    transport = httpx.ASGITransport(app=built.app)
    app = built.app
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, headers=dict(headers or {})
            ) as client,
        ):
            yield InProcess(app, built.services, built.worker, client)
    finally:
        if options.get("url") is None:
            await built.queue.storage.drop()
