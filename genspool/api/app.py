"""The HTTP app factory: routes, error mapping, the body-size guard and the lifespan.

Every :class:`~genspool.exceptions.GenspoolError` becomes one JSON error in the OpenAI shape
(``{"error": {"message", "type", "code", "param"}}``) with the status the exception carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState

from genspool.api.admission import Admission
from genspool.api.validation import describe_request_error
from genspool.core.keys import KeyStore
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.exceptions import GenspoolError, PayloadTooLarge
from genspool.runtime.catalog import ModelCatalog

__all__ = ["Services", "create_app", "error_response"]

log = logging.getLogger("genspool.api")


@dataclass
class Services:
    queue: Queue
    #: The served models as cards (no provider built); a ModelRegistry when a worker runs here.
    registry: ModelCatalog
    max_body_bytes: int = 4 * 1024 * 1024
    wait_timeout_s: float = 600.0
    worker: Worker | None = None
    keys: KeyStore | None = None  # None: a KeyStore on the queue's backend
    admission: Admission | None = None  # None: load shedding by the models' own limits


def error_response(
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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


def create_app(services: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.queue.connect()
        task = None
        if services.worker is not None:
            await services.worker.start()
            task = asyncio.create_task(services.worker.run())
        assert services.admission is not None
        shedding = asyncio.create_task(services.admission.run())
        try:
            yield
        finally:
            shedding.cancel()
            if task is not None and services.worker is not None:
                services.worker.stop()
                await task
            await services.registry.aclose()
            await services.queue.close()

    from genspool.api.auth import authorize, document_scopes, requires

    if services.keys is None:
        services.keys = KeyStore(services.queue.storage.kv, services.queue.storage.coordination)
    if services.admission is None:
        services.admission = Admission(services.queue, list(services.registry))
    app = FastAPI(
        title="genspool",
        version="0.1.0",
        lifespan=lifespan,
        summary="Buffered, batched generative-AI jobs behind an OpenAI-compatible API.",
        # Every route, of every router included below or later, is authorized here.
        dependencies=[Depends(authorize)],
    )
    app.state.services = services
    app.add_middleware(BodyLimit, limit=services.max_body_bytes)
    _add_error_handlers(app)
    from genspool.api import routes_jobs, routes_keys, routes_openai, routes_ops, routes_push

    @app.get("/healthz", tags=["health"], summary="Liveness: answers 200 while the API runs")
    @requires("public")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(routes_jobs.router)
    app.include_router(routes_push.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_keys.router)
    document_scopes(app)
    return app


def _can_deny(ws: WebSocket) -> bool:
    return ws.application_state is WebSocketState.CONNECTING and (
        "websocket.http.response" in ws.scope.get("extensions", {})
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenspoolError)
    async def genspool_error(conn: HTTPConnection, exc: GenspoolError) -> JSONResponse | None:
        response = error_response(exc.status_code, exc.message, exc.code, exc.param, exc.headers)
        if isinstance(conn, WebSocket) and not _can_deny(conn):
            # Accepted already (or no denial extension): all that is left is a close frame.
            reason = exc.message.encode()[:120].decode(errors="ignore")
            await conn.close(1008 if exc.status_code < 500 else 1011, reason)
            return None
        return response  # on a WebSocket handshake: an HTTP denial response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_request_error(exc.errors())
        return error_response(400, message, "invalid_request_error", param)
