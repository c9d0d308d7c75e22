"""``/docs`` (Swagger UI) and ``/redoc`` that work without internet access.

FastAPI's own pages load their scripts and styles from a CDN, so behind a firewall or offline
they render blank. Here the same pages load them from the ``fastapi-offline`` package (pinned
Swagger UI and ReDoc builds, MIT licensed, shipped as package data), served under
:data:`ASSETS`. The pages are plain routes like FastAPI's own: who may read them is unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

from genspool.exceptions import ConfigError

__all__ = ["ASSETS", "add_docs", "assets_dir"]

#: Where the Swagger UI and ReDoc files are served.
ASSETS = "/docs-assets"


def assets_dir() -> Path:
    """The directory of the packaged Swagger UI / ReDoc files (found without importing it)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError('the docs assets are missing: pip install "fastapi-offline"')
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` over ``app.openapi_url``; create ``app`` with both URLs None."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    title = app.title

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
