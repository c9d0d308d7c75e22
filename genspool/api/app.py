"""The HTTP app factory: the routers, the error handlers, the body-size guard and the lifespan.

The app gets its :class:`~genspool.api.deps.Services` ready-made (see
:func:`~genspool.api.deps.build_services`); its lifespan connects the queue, runs load
shedding's refresh and, in ``genspool serve``, a worker in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genspool.api import (
    routes_batches,
    routes_drift,
    routes_fanouts,
    routes_files,
    routes_jobs,
    routes_keys,
    routes_metrics,
    routes_openai,
    routes_ops,
    routes_pipelines,
    routes_prompts,
    routes_push,
    routes_rules,
    routes_vector_stores,
    routes_webhooks,
)
from genspool.api.auth import authorize, document_scopes, requires
from genspool.api.deps import Services
from genspool.api.docs import add_docs
from genspool.api.errors import add_error_handlers, error_response
from genspool.api.origin import OriginGuard
from genspool.api.schemas import document_responses
from genspool.api.shutdown import Shutdown
from genspool.api.ui import mount_ui
from genspool.batches import Batches
from genspool.core.worker import Worker
from genspool.drift.watch import DriftWatch
from genspool.exceptions import PayloadTooLarge
from genspool.files import Files
from genspool.pipelines.service import Pipelines
from genspool.rag.service import VectorStores
from genspool.tracing import TraceContext, fastapi_telemetry
from genspool.tracing import install as install_tracing

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger("genspool.api")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming.
    Bodies POSTed to the ``exempt`` paths are bounded by their route instead (file uploads,
    streamed to storage under their own limit)."""

    def __init__(self, app: ASGIApp, limit: int, exempt: Iterable[str] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared))
        seen = 0

        async def counted() -> Message:
            # Past the limit the app sees a disconnect, whatever it makes of that is dropped,
            # and the client gets the 413 below.
            nonlocal seen
            if seen > self.limit:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            return {"type": "http.disconnect"} if seen > self.limit else message

        async def guarded(message: Message) -> None:
            if seen <= self.limit:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if seen <= self.limit:
                raise
        if seen > self.limit:
            await self._refuse(scope, receive, send, seen)

    def _message(self, size: int) -> str:
        return (
            f"request body is {size} bytes, above the {self.limit}-byte limit"
            " (GENSPOOL_MAX_BODY_BYTES); send less per request"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        response = error_response(413, self._message(size), PayloadTooLarge.code)
        await response(scope, receive, send)


def create_app(
    services: Services,
    *,
    worker: Worker | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
) -> FastAPI:
    """The API over ``services``; with ``worker``, that worker runs while the app does.
    ``allowed_hosts`` and ``allowed_origins`` pass the Host and Origin checks besides loopback
    names and the server's own origin (:mod:`genspool.api.origin`)."""
    app = FastAPI(
        title="genspool",
        version="0.1.0",
        lifespan=_lifespan(services, worker),
        summary="Buffered, batched generative-AI jobs behind an OpenAI-compatible API.",
        # Every route, of every router included below or later, is authorized here.
        dependencies=[Depends(authorize)],
        docs_url=None,  # add_docs serves them from packaged assets, not a CDN
        redoc_url=None,
        **fastapi_telemetry(),  # FastAPI's own spans and metrics: off while tracing is on
    )
    app.state.services = services
    app.state.shutdown = Shutdown(worker)
    app.state.metrics = routes_metrics.install(services, worker)
    # After the metrics, whose observer it wraps; nothing imported from OpenTelemetry when off.
    if install_tracing(services.queue, {cfg.name: cfg.provider for cfg in services.catalog}):
        app.add_middleware(TraceContext)  # a caller's traceparent: the producer span's parent
    app.add_middleware(BodyLimit, limit=services.max_body_bytes, exempt=[routes_files.UPLOAD])
    # Added last, so outermost: a foreign Host or Origin is refused before any other work.
    app.add_middleware(OriginGuard, hosts=allowed_hosts, origins=allowed_origins)
    add_error_handlers(app)

    @app.get("/healthz", tags=["health"], summary="Liveness: answers 200 while the API runs")
    @requires("public")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (
        routes_jobs, routes_push, routes_openai, routes_ops, routes_keys, routes_files,
        routes_fanouts, routes_rules, routes_batches, routes_webhooks, routes_pipelines,
        routes_vector_stores, routes_metrics, routes_prompts, routes_drift,
    ):  # fmt: skip
        app.include_router(module.router)
    document_scopes(app)
    document_responses(app)
    add_docs(app)
    mount_ui(app)  # the web UI at /ui, with its own auth (cookie, CSRF) and error pages
    return app


def _lifespan(
    services: Services, worker: Worker | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.queue.connect()
        serving = None
        if worker is not None:
            await _load(worker)
            serving = asyncio.create_task(worker.run())
        shedding = asyncio.create_task(services.admission.run())
        drift = DriftWatch(
            services.queue.storage.drift, list(services.catalog), services.queue.clock
        )
        drifting = asyncio.create_task(drift.run())
        try:
            async with (
                _files_running(services.files),
                _running(services.batches),
                _running(services.pipelines),
                _running(services.vector_stores),
            ):
                yield
        finally:
            shedding.cancel()
            drifting.cancel()
            await app.state.metrics.aclose()
            # Usually begun already by the signal (genspool.cli): push streams end, no leases.
            await app.state.shutdown.begin()
            if worker is not None and serving is not None:
                await serving
            await services.catalog.aclose()
            await services.queue.close()

    return lifespan


@contextlib.asynccontextmanager
async def _files_running(files: Files | None) -> AsyncIterator[None]:
    """The blob store connected, and expired files purged, while the app runs."""
    if files is None:
        log.warning("this store keeps no files: the Files API answers 501 (see GENSPOOL_QUEUE_URL)")
        yield
        return
    await files.connect()
    purging = asyncio.create_task(files.run())
    try:
        yield
    finally:
        purging.cancel()
        await files.close()


@contextlib.asynccontextmanager
async def _running(part: Batches | Pipelines | VectorStores | None) -> AsyncIterator[None]:
    """Batches (genspool.batches.runner), pipeline runs and their triggers
    (genspool.pipelines) or vector store files being ingested (genspool.rag.ingest) driven by
    this process while the app runs."""
    running = None if part is None else asyncio.create_task(part.run())
    try:
        yield
    finally:
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def _load(worker: Worker) -> None:
    """Load the worker's models, one log line as each starts and ends (weights can take
    seconds to load, and a first start converts them)."""

    async def one(name: str, provider: str) -> None:
        started = time.perf_counter()
        log.info("loading model %s (provider %s)", name, provider)
        await worker.registry.provider(name).load()
        log.info("loaded model %s in %.1f s", name, time.perf_counter() - started)

    await asyncio.gather(*(one(cfg.name, cfg.provider) for cfg in worker.models))
    await worker.start()
