"""Who is looking at the web UI, what they may do, and the CSRF token of their session.

A browser logs in with an API key (the API's own keys, :mod:`genspool.core.keys`): the key goes
into an HttpOnly, SameSite=Strict cookie scoped to ``/ui`` (Secure over https), so page scripts
never see it and other sites never send it. While no key exists (the embedded default, loopback
only) the UI is open, as the API is.

Every view declares the scope it needs with :func:`ui_requires` (``"public"``: none; nothing
declared: ``admin``), and :func:`ui_authorize`, installed on the whole UI app, checks it on
every request — a button a key may not press is not drawn, and a forged POST is refused anyway.

CSRF: every browser gets a random session id in its own HttpOnly cookie; a page carries
``HMAC-SHA256(secret, session id)`` in a hidden field and in htmx's ``hx-headers``, and every
request but GET/HEAD/OPTIONS must send it back (field ``csrf_token`` or header
``X-CSRF-Token``). The secret is kept in the store's key-value records, so every API process
of one deployment accepts the tokens of the others; the session id is replaced at login and
logout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Request
from starlette.responses import Response

from genspool.api.auth import OPEN, Caller
from genspool.api.deps import services
from genspool.core.keys import Scope
from genspool.core.roles import Coordination, KeyValue
from genspool.exceptions import Forbidden, Unauthorized

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "KEY_COOKIE",
    "SID_COOKIE",
    "Csrf",
    "LoginRequired",
    "UiCaller",
    "can",
    "clear_session",
    "csrf_of",
    "session_id",
    "set_cookie",
    "start_session",
    "ui_authorize",
    "ui_requires",
]

F = TypeVar("F", bound=Callable[..., Any])
Needed = Scope | Literal["public"]

KEY_COOKIE = "genspool_ui_key"
SID_COOKIE = "genspool_ui_sid"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SECRET_AT = ("ui", "csrf-secret")
_SID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_DECLARED: dict[Callable[..., Any], Needed] = {}
#: What a page shows for a caller with no key at all (the login page while auth is on).
ANONYMOUS = Caller(tenant="default", scopes=frozenset())


class LoginRequired(Exception):
    """No key, or one that no longer works: the browser is sent to the login page."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class Csrf:
    """Tokens bound to a browser session: ``HMAC-SHA256(secret, session id)``, hex."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a CSRF secret needs at least 32 bytes")
        self._secret = secret

    def token(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def valid(self, sid: str | None, token: str | None) -> bool:
        """Whether ``token`` was made for ``sid`` (in constant time)."""
        if not sid or not token or not _SID.match(sid):
            return False
        return hmac.compare_digest(self.token(sid), token)


async def load_secret(kv: KeyValue, coordination: Coordination) -> bytes:
    """The deployment's CSRF secret, made and stored by the first process that asks. Made
    under a one-holder slot, so that two processes starting together cannot each keep their own
    (the second waits for the first's and reads it)."""
    holder = secrets.token_hex(8)
    for _ in range(100):
        stored = await kv.kv_get(*_SECRET_AT)
        if stored is not None:
            break
        if await coordination.acquire_slot("ui-csrf-secret", holder, 1, 10.0, time.time()):
            try:
                if await kv.kv_get(*_SECRET_AT) is None:
                    await kv.kv_put(*_SECRET_AT, secrets.token_bytes(32))
            finally:
                await coordination.release_slot("ui-csrf-secret", holder)
        else:
            await asyncio.sleep(0.05)
    if stored is None or len(stored) < 32:
        raise RuntimeError("the store did not keep the web UI's CSRF secret")
    return stored


async def csrf_of(request: Request) -> Csrf:
    """The UI app's :class:`Csrf`, its secret read from the store once per process."""
    state = request.app.state
    csrf: Csrf | None = getattr(state, "csrf", None)
    if csrf is None:
        storage = services(request).queue.storage
        csrf = state.csrf = Csrf(await load_secret(storage.kv, storage.coordination))
    return csrf


def session_id(request: Request) -> str:
    """This browser's session id: its cookie's, or a new one that :func:`set_cookie` sends
    with the response (``request.state.new_sid``)."""
    sid = request.cookies.get(SID_COOKIE, "")
    if _SID.match(sid):
        return sid
    fresh: str | None = getattr(request.state, "new_sid", None)
    if fresh is None:
        fresh = request.state.new_sid = secrets.token_urlsafe(32)
    return fresh


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A cookie no script reads and no other site sends, for the UI's paths only."""
    response.set_cookie(
        name,
        value,
        path=_ui_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def start_session(request: Request, response: Response, key: str) -> None:
    """Log in: the key's cookie, and a new session id (a session id planted before login is
    worth nothing after it)."""
    set_cookie(request, response, KEY_COOKIE, key)
    set_cookie(request, response, SID_COOKIE, secrets.token_urlsafe(32))


def clear_session(request: Request, response: Response) -> None:
    for name in (KEY_COOKIE, SID_COOKIE):
        response.delete_cookie(
            name,
            path=_ui_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def _ui_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


def ui_requires(scope: Needed) -> Callable[[F], F]:
    """Declare the scope a view needs (``"public"``: none). Put it under the route decorator."""

    def mark(endpoint: F) -> F:
        _DECLARED[endpoint] = scope
        return endpoint

    return mark


def can(caller: Caller, scope: Scope) -> bool:
    """Whether ``caller`` may do what needs ``scope`` (``admin`` includes every scope)."""
    return scope in caller.scopes or Scope.ADMIN in caller.scopes


async def ui_authorize(request: Request) -> Caller:
    """The caller of a UI request, once its CSRF token (on a state change) and its scope are
    checked. Installed on the whole UI app, so no view can be added without it."""
    if request.method not in _SAFE:
        await _check_csrf(request)
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    needed = _DECLARED.get(endpoint, Scope.ADMIN) if endpoint else Scope.ADMIN
    if needed == "public":
        return ANONYMOUS
    store = services(request).keys
    if not await store.enabled():
        return OPEN
    try:
        key = await store.authenticate(request.cookies.get(KEY_COOKIE))
    except Unauthorized as exc:
        raise LoginRequired(exc.message if request.cookies.get(KEY_COOKIE) else "") from None
    if not key.allows(needed):
        raise Forbidden(
            f"this API key lacks the '{needed}' scope this needs"
            f" (it has: {', '.join(sorted(key.scopes))})"
        )
    return Caller(key.tenant, key.scopes, key)


async def _check_csrf(request: Request) -> None:
    token = request.headers.get(CSRF_HEADER)
    if token is None and "form" in request.headers.get("content-type", ""):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not (await csrf_of(request)).valid(request.cookies.get(SID_COOKIE), token):
        raise Forbidden(
            "this form's CSRF token is missing or not this session's; reload the page and try again"
        )


#: A view's parameter: ``caller: UiCaller``.
UiCaller = Annotated[Caller, Depends(ui_authorize)]
