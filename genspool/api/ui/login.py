"""``/ui/login`` and ``/ui/logout``: an API key in, a session cookie out.

The key is checked as the API checks it (:meth:`~genspool.core.keys.KeyStore.authenticate`)
and must hold ``read``, which every view needs. It is never written into a page: a failed login
shows the form again, empty, with why (never the key).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from genspool.api.deps import services
from genspool.api.ui.pages import render
from genspool.api.ui.session import (
    ANONYMOUS,
    clear_session,
    start_session,
    ui_requires,
)
from genspool.core.keys import Scope
from genspool.exceptions import Unauthorized

__all__ = ["router", "safe_next"]

router = APIRouter(include_in_schema=False)


def safe_next(root: str, target: str | None) -> str:
    """Where to go after login: a path of this UI, never another site (``//evil``, ``/\\``)."""
    home = f"{root}/"
    if not target or not target.startswith(f"{root}/") or target.startswith("//"):
        return home
    if "\\" in target or any(ord(c) < 32 for c in target):
        return home
    return target


@router.get("/login")
@ui_requires("public")
async def login_form(request: Request, next: str | None = None, expired: int = 0) -> Response:
    root = str(request.scope.get("root_path", ""))
    if not await services(request).keys.enabled():
        return RedirectResponse(safe_next(root, next), status_code=303)
    why = "Your session ended (the key was revoked or is invalid); log in again." if expired else ""
    return await render(request, "login.html", ANONYMOUS, error=why, next=next or "")


@router.post("/login")
@ui_requires("public")
async def login(request: Request) -> Response:
    form = await request.form()
    token, target = form.get("key"), form.get("next")
    root = str(request.scope.get("root_path", ""))
    store = services(request).keys
    if not await store.enabled():
        return RedirectResponse(safe_next(root, None), status_code=303)
    key_text = token.strip() if isinstance(token, str) else ""
    try:
        key = await store.authenticate(key_text or None)
    except Unauthorized as exc:
        return await _again(request, 401, exc.message, target)
    if not key.allows(Scope.READ):
        message = "this API key lacks the 'read' scope that the web UI needs"
        return await _again(request, 403, message, target)
    response = RedirectResponse(
        safe_next(root, target if isinstance(target, str) else None), status_code=303
    )
    start_session(request, response, key_text)
    return response


async def _again(request: Request, status: int, message: str, target: object) -> Response:
    back = target if isinstance(target, str) else ""
    return await render(request, "login.html", ANONYMOUS, status, error=message, next=back)


@router.post("/logout")
@ui_requires("public")
async def logout(request: Request) -> Response:
    """Public so that a session whose key was revoked can still end itself; the CSRF token is
    checked all the same (a cross-site page cannot log anyone out)."""
    root = str(request.scope.get("root_path", ""))
    response = RedirectResponse(f"{root}/login", status_code=303)
    clear_session(request, response)
    return response
