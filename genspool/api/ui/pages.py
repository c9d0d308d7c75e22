"""Rendering: the templates of the UI, the values every page gets, and the filters they use.

Templates live in ``templates/`` (package data), autoescaped. :func:`render` gives a page or a
fragment the caller, what the caller may do, the CSRF token of the session and the UI's root
path (``/ui``, or behind a proxy's prefix), and sends a new session id's cookie when the
browser had none. Everything shown from a job passes :func:`shown_json`, which blanks anything
shaped like a secret (:func:`genspool.core.keys.redact`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

import jinja2
import orjson
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from genspool.api.auth import Caller
from genspool.api.ui.session import SID_COOKIE, can, csrf_of, session_id, set_cookie
from genspool.core.keys import Scope, redact

__all__ = ["ago", "fragment", "page_context", "render", "shown_json", "sparkline", "when"]

_KEY_LEFT = re.compile(r"gsk_[0-9a-f]{12}_\[redacted\]")
#: The items of the navigation bar: (path under the UI root, label). A new view group adds its
#: own entry here.
NAV = (
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/dead-letters", "Dead letters"),
    ("/fanouts", "Fan-outs"),
    ("/batches", "Batches"),
    ("/pipelines", "Pipelines"),
    ("/vector-stores", "Vector stores"),
    ("/prompts", "Prompts"),
    ("/drift", "Drift"),
    ("/playground", "Playground"),
)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("genspool.api.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=ago, when=when, json=shown_json, spark=sparkline, redact=_redact)
    return env


async def render(
    request: Request,
    template: str,
    caller: Caller,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    sid = session_id(request)
    html = fragment(template, await page_context(request, caller), **values)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    if getattr(request.state, "new_sid", None) == sid:
        set_cookie(request, response, SID_COOKIE, sid)
    return response


async def page_context(request: Request, caller: Caller) -> dict[str, Any]:
    """What every template gets: the UI's root path, the caller and what it may do, the CSRF
    token of the session."""
    return {
        "ui": str(request.scope.get("root_path", "")),
        "caller": caller,
        "can_submit": can(caller, Scope.SUBMIT),
        "admin": caller.admin,
        "logged_in": caller.key is not None,
        "csrf": (await csrf_of(request)).token(session_id(request)),
        "nav": NAV,
        "path": request.url.path,
    }


def fragment(template: str, context: dict[str, Any], **values: Any) -> str:
    """``template`` rendered with ``context`` (:func:`page_context`) and ``values``."""
    return environment().get_template(template).render({**context, **values})


def when(t: float | None) -> str:
    """A Unix time as UTC, to the second: ``2025-01-31 12:00:05Z``."""
    if t is None:
        return "—"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(seconds: float | None, now: float | None = None) -> str:
    """A duration, or the age of a Unix time when ``now`` is given: ``42 s``, ``3 min``."""
    if seconds is None:
        return "—"
    span = max((now - seconds) if now is not None else seconds, 0.0)
    if span < 1:
        return f"{span * 1000:.0f} ms"
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if span >= size:
            return f"{span / size:.1f} {unit}" if span < 10 * size else f"{span // size:.0f} {unit}"
    return f"{span:.1f} s" if span < 10 else f"{span:.0f} s"


def shown_json(value: Any) -> str:
    """``value`` as indented JSON, with secrets blanked (a key pasted into a prompt, a token
    in an error message)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    return _redact(text)


def _redact(value: object) -> str:
    """:func:`~genspool.core.keys.redact`, and an API key's id blanked too: a page shows no
    part of a key."""
    return _KEY_LEFT.sub("[redacted API key]", redact(str(value)))


def sparkline(points: list[float | None], width: int = 120, height: int = 24) -> Markup:
    """An inline SVG line of ``points`` (gaps where None), scaled to its own maximum; drawn
    with SVG attributes only, which the Content-Security-Policy allows (no ``style``)."""
    values = [p for p in points if p is not None]
    top = max(values, default=0.0) or 1.0
    step = width / max(len(points) - 1, 1)
    runs: list[list[str]] = [[]]
    for i, p in enumerate(points):
        if p is None:
            runs.append([])
            continue
        runs[-1].append(f"{i * step:.1f},{height - 1 - (height - 2) * p / top:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(run)}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        for run in runs
        if len(run) > 1
    )
    label = f"last {len(points)} samples, max {top:.3g}"
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{label}">{lines}</svg>'
    )
