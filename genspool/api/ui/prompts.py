"""``/ui/prompts``: the caller's stored prompts, each at its latest version; one prompt with its
versions (template, variables, labels pointing at it), its labels and its audit history; a
form that points a label at a version.

Through the registry the prompts API uses (:class:`~genspool.core.prompts.Prompts`), on the
caller's own tenant as ``/v1/prompts`` is (an admin key included). Reading needs ``read``;
moving a label ``submit`` (as ``POST /v1/prompts/{id}/labels/{label}``), recorded in the
audit under the key's id. A version is never edited: a new one is made through the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.deps import services
from genspool.api.ui.common import cursor, go_to, need
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.keys import Scope
from genspool.core.prompts import Prompts
from genspool.exceptions import InvalidRequest

__all__ = ["AUDIT", "PAGE", "VERSIONS", "router"]

router = APIRouter(include_in_schema=False)

PAGE = 50
VERSIONS = 20
AUDIT = 200


def _prompts(request: Request) -> Prompts:
    return need(services(request).prompts, "prompts")


@router.get("/prompts")
@ui_requires(Scope.READ)
async def prompts(request: Request, caller: UiCaller, after: str | None = None) -> Response:
    found = await _prompts(request).store.prompt_list(caller.tenant, cursor(after), PAGE + 1)
    shown = found[:PAGE]
    return await render(
        request, "prompts.html", caller, prompts=shown, after=after,
        next_after=shown[-1].prompt_id if len(found) > PAGE else None,
    )  # fmt: skip


def _before(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest("before: a version number; use the page's link", param="before")
    return int(text)


@router.get("/prompts/{prompt_id}")
@ui_requires(Scope.READ)
async def prompt(
    request: Request, caller: UiCaller, prompt_id: str, before: str | None = None
) -> Response:
    reg = _prompts(request)
    labels = await reg.labels(caller.tenant, prompt_id)  # 404 for a prompt not the caller's
    below = _before(before)
    found = await reg.store.prompt_versions(caller.tenant, prompt_id, below, VERSIONS + 1)
    versions = found[:VERSIONS]
    audit = await reg.store.audit_list(caller.tenant, prompt_id, None, AUDIT + 1)
    by_version: dict[int, list[str]] = {}
    for name, number in sorted(labels.items()):
        by_version.setdefault(number, []).append(name)
    return await render(
        request, "prompt.html", caller, prompt_id=prompt_id, labels=labels,
        by_version=by_version, versions=versions, templates={v.version: _template(v.template)
                                                             for v in versions},
        before=below, next_before=versions[-1].version if len(found) > VERSIONS else None,
        audit=audit[:AUDIT], more_audit=len(audit) > AUDIT,
        latest=labels.get("latest"),
    )  # fmt: skip


def _template(template: Any) -> Any:
    """A version's template as the API shows it: a string, or ``[{"role", "content"}]``."""
    if isinstance(template, str):
        return template
    return [{"role": role, "content": content} for role, content in template]


@router.post("/prompts/{prompt_id}/labels")
@ui_requires(Scope.SUBMIT)
async def move_label(request: Request, caller: UiCaller, prompt_id: str) -> Response:
    """Point the form's ``label`` at its ``version``; back to the prompt's page."""
    form = await request.form()
    label, version = form.get("label"), form.get("version")
    if not isinstance(label, str) or not label.strip():
        raise InvalidRequest("label: name the label to move, e.g. production", param="label")
    if not isinstance(version, str) or not version.strip().isdigit():
        raise InvalidRequest("version: a version number of this prompt", param="version")
    actor = caller.key.id if caller.key is not None else None
    await _prompts(request).move_label(
        caller.tenant, prompt_id, label.strip(), int(version), actor=actor
    )
    return go_to(request, f"/prompts/{prompt_id}")
