"""The UI as an app of its own, mounted at ``/ui`` of the API, and the headers of its answers.

Its own app, so that its errors are pages rather than the API's JSON, its routes stay out of
the OpenAPI schema, and no view can be added without :func:`~genspool.api.ui.session.ui_authorize`
(installed on the whole app). It shares the API's services and metrics, and sits inside the
API's middleware: the Host/Origin guard and the body limit apply to it as to every route.

:class:`UiHeaders` wraps the API app and gives every answer under ``/ui`` — pages, fragments,
static files, redirects and errors alike — a strict Content-Security-Policy (scripts, styles,
images and requests from this origin only; no inline script or style, no ``eval``; no framing),
and keeps pages out of caches (they show one tenant's jobs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genspool.api.deps import Services
from genspool.api.ui import (
    batches,
    dead_letters,
    drift,
    fanouts,
    jobs,
    live,
    login,
    overview,
    pipelines,
    playground,
    prompts,
    stores,
)
from genspool.api.ui.pages import render
from genspool.api.ui.session import ANONYMOUS, LoginRequired, clear_session, ui_authorize
from genspool.api.validation import describe_request_error
from genspool.exceptions import GenspoolError
from genspool.metrics import Metrics

__all__ = ["PREFIX", "STATIC", "UiHeaders", "build_ui", "mount_ui"]

log = logging.getLogger("genspool.api")

PREFIX = "/ui"
STATIC = Path(__file__).parent / "static"
#: Every view group: a module with a ``router``; a new group adds itself here (and to NAV).
VIEWS = (login, overview, jobs, dead_letters, fanouts, batches, pipelines, stores, prompts, drift,
         live, playground)  # fmt: skip

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it Chromium sends "Origin: null" with a form's POST, which the
    # API's Origin guard (rightly) refuses; same-origin keeps every URL from other sites.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class UiHeaders:
    """Security headers on every answer under ``/ui``; ``Cache-Control: no-store`` on all
    but its static files."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        under = path == self.prefix or path.startswith(f"{self.prefix}/")
        if scope["type"] != "http" or not under:
            return await self.app(scope, receive, send)
        static = path.startswith(f"{self.prefix}/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in _HEADERS if h[0] not in names]
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def build_ui(services: Services, metrics: Metrics | None) -> FastAPI:
    """The UI app over the API's ``services`` and ``metrics``."""
    ui = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(ui_authorize)],
    )
    ui.state.services, ui.state.metrics = services, metrics
    ui.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Text answers compressed (the live stream's text/event-stream is left alone).
    ui.add_middleware(GZipMiddleware, minimum_size=500)
    for module in VIEWS:
        ui.include_router(module.router)
    _add_error_pages(ui)
    return ui


def mount_ui(app: FastAPI) -> None:
    """Serve the UI at ``/ui`` of ``app`` (``/ui`` itself redirects to ``/ui/``)."""
    ui = build_ui(app.state.services, app.state.metrics)
    ui.state.shutdown = app.state.shutdown  # the live streams end with the API's push streams
    app.mount(PREFIX, ui, name="ui")
    app.add_middleware(UiHeaders)


def _add_error_pages(ui: FastAPI) -> None:
    @ui.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        root = str(request.scope.get("root_path", ""))
        target = f"{root}/login?next={quote(_back(request), safe='')}"
        if exc.why:
            target += "&expired=1"
        if request.headers.get("hx-request"):  # htmx follows this header, not a redirect
            response: Response = Response(status_code=401, headers={"HX-Redirect": target})
        elif request.method in ("GET", "HEAD"):
            response = RedirectResponse(target, status_code=303)
        else:
            response = await _page(request, 401, "Log in again to do this.")
        if exc.why:
            clear_session(request, response)
        return response

    @ui.exception_handler(GenspoolError)
    async def genspool_error(request: Request, exc: GenspoolError) -> Response:
        return await _page(request, exc.status_code, exc.message)

    @ui.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, _ = describe_request_error(exc.errors())
        return await _page(request, 400, message)

    @ui.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return await _page(request, exc.status_code, message)


def _back(request: Request) -> str:
    """Where to return after logging in: this page, or for a fragment (htmx) the page that
    asked for it."""
    url = request.url
    if request.headers.get("hx-request"):
        url = URL(request.headers.get("hx-current-url", ""))
        if url.netloc != request.url.netloc:
            return ""
    return url.path + (f"?{url.query}" if url.query else "")


async def _page(request: Request, status: int, message: str) -> Response:
    """An error as a page, or as a fragment that the page's script shows (htmx); as plain
    text when even the page cannot be made (the store that keeps the CSRF secret is down)."""
    template = "_error.html" if request.headers.get("hx-request") else "error.html"
    try:
        return await render(request, template, ANONYMOUS, status, message=message, status=status)
    except Exception:
        log.exception("could not render the error page for %s", request.url.path)
        return PlainTextResponse(f"{status}: {message}", status_code=status)
