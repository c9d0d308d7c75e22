"""The API's one error shape and the handlers that produce it.

Every :class:`~genspool.exceptions.GenspoolError` becomes one JSON error in the OpenAI shape
(``{"error": {"message", "type", "code", "param"}}``) with the status the exception carries; a
request that fails validation becomes a 400 naming the field; an unknown route (404) or method
(405) answers in the same shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from genspool.api.validation import describe_request_error
from genspool.exceptions import GenspoolError

__all__ = ["add_error_handlers", "error_response"]

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


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


def _can_deny(ws: WebSocket) -> bool:
    return ws.application_state is WebSocketState.CONNECTING and (
        "websocket.http.response" in ws.scope.get("extensions", {})
    )


def add_error_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Raised by the router itself: no route has this path, or none takes this method.
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        return error_response(exc.status_code, _http_message(request, exc), code, None, headers)


def _http_message(request: Request, exc: HTTPException) -> str:
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return f"no route answers {where}; the routes are listed at /docs and /openapi.json"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{where}: method not allowed here; this path takes {allowed or 'other methods'}"
    return f"{where}: {exc.detail}"
