"""The prompt registry: ``/v1/prompts``. Create (a new prompt, or the next version of one),
list, read by version or label, list versions, move a label, read the audit; tenant-scoped.

A version is never edited: ``PUT`` or ``PATCH`` on one is a 409 saying to create a new version.
Another tenant's prompt, like a missing one, is 404. Reads need the ``read`` scope, writes
``submit`` (an ``admin`` key has both). A deployment whose store keeps no prompts (a Redis or
NATS server alone) answers 501, as for files and batches.

:func:`rendered` is the door's one step for requests that name a stored prompt (``/v1/jobs``,
``/v1/chat/completions``, ``/v1/responses``): the rules are in :mod:`genspool.core.prompts`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from genspool.api.auth import Caller, Principal, requires
from genspool.api.deps import Services, Svc
from genspool.core.keys import Scope
from genspool.core.prompts import CHAT_URL, RESPONSES_URL, AuditEntry, Prompts, PromptVersion
from genspool.exceptions import ConfigError, Conflict, InvalidRequest

__all__ = ["LabelMove", "PromptCreate", "rendered", "router"]

router = APIRouter(prefix="/v1", tags=["prompts"])


class PromptsUnavailable(ConfigError):
    """The deployment's store keeps no prompts (a Redis or NATS server alone)."""

    status_code = 501
    code = "prompts_unavailable"


class PromptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The prompt's name; an existing one gets its next version.")
    kind: str = Field("chat", description="'chat' (a list of messages) or 'text' (one string).")
    template: str | list[dict[str, Any]] = Field(
        description="Jinja2 with {{variable}} placeholders: a string (text), or a list of"
        ' {"role", "content"} (chat).'
    )
    description: str | None = Field(None, max_length=1000)
    labels: list[str] = Field(
        default_factory=list, description="Labels to move to the new version, e.g. 'production'."
    )


class LabelMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="The version the label is to point at.")
    expected_version: int | None = Field(
        None,
        ge=0,
        description="Move only if the label points at this version now (0: not set yet), else"
        " 409; without it the move is made over whatever it points at.",
    )


def _prompts(svc: Services) -> Prompts:
    if svc.prompts is None:
        raise PromptsUnavailable(
            "this deployment keeps no prompts: its store is a Redis or NATS server alone; run"
            " with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL set"
            " to the Redis or NATS server (the queue)"
        )
    return svc.prompts


def _actor(caller: Caller) -> str | None:
    """Who made a change, for the audit: the API key's id (None while auth is off)."""
    return caller.key.id if caller.key is not None else None


async def _public(reg: Prompts, tenant: str, found: PromptVersion) -> dict[str, Any]:
    labels = await reg.labels(tenant, found.prompt_id)
    return found.public([name for name, n in labels.items() if n == found.version])


@router.post("/prompts", status_code=201, summary="Create a prompt, or its next version")
@requires(Scope.SUBMIT)
async def create_prompt(svc: Svc, caller: Principal, spec: PromptCreate) -> dict[str, Any]:
    reg = _prompts(svc)
    made = await reg.create(
        caller.tenant, spec.id, spec.kind, spec.template, actor=_actor(caller),
        description=spec.description,
    )  # fmt: skip
    for label in spec.labels:
        await reg.move_label(caller.tenant, spec.id, label, made.version, actor=_actor(caller))
    return await _public(reg, caller.tenant, made)


@router.get("/prompts", summary="The caller's prompts, each at its latest version, by id")
@requires(Scope.READ)
async def list_prompts(
    svc: Svc,
    caller: Principal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    found = await _prompts(svc).store.prompt_list(caller.tenant, after, limit + 1)
    data = [v.public() for v in found[:limit]]
    return {"object": "list", "data": data, "has_more": len(found) > limit,
            "last_id": data[-1]["id"] if data else None}  # fmt: skip


@router.get("/prompts/{prompt_id}", summary="A prompt: its latest version, or ?version= or ?label=")
@requires(Scope.READ)
async def get_prompt(
    svc: Svc,
    caller: Principal,
    prompt_id: str,
    version: Annotated[int | None, Query(ge=1)] = None,
    label: str | None = None,
) -> dict[str, Any]:
    reg = _prompts(svc)
    if version is not None and label is not None:
        raise InvalidRequest("version: give a version or a label, not both", param="version")
    if label is not None:
        found = await reg.by_label(caller.tenant, prompt_id, label, fresh=True)
    else:
        found = await reg.version(caller.tenant, prompt_id, version)
    return await _public(reg, caller.tenant, found)


@router.get("/prompts/{prompt_id}/versions", summary="A prompt's versions, newest first")
@requires(Scope.READ)
async def list_versions(
    svc: Svc,
    caller: Principal,
    prompt_id: str,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    reg = _prompts(svc)
    labels = await reg.labels(caller.tenant, prompt_id)  # 404 for a prompt not the caller's
    found = await reg.store.prompt_versions(caller.tenant, prompt_id, before, limit + 1)
    data = [v.public([name for name, n in labels.items() if n == v.version]) for v in found[:limit]]
    return {"object": "list", "data": data, "has_more": len(found) > limit}


@router.get("/prompts/{prompt_id}/versions/{version}", summary="One version of a prompt")
@requires(Scope.READ)
async def get_version(svc: Svc, caller: Principal, prompt_id: str, version: int) -> dict[str, Any]:
    reg = _prompts(svc)
    return await _public(reg, caller.tenant, await reg.version(caller.tenant, prompt_id, version))


IMMUTABLE = (
    "a prompt version is never edited: POST /v1/prompts with the same id creates the next"
    " version, and POST /v1/prompts/{id}/labels/{label} points a label at it"
)


@router.put("/prompts/{prompt_id}/versions/{version}", summary="Refused: versions are immutable")
@router.patch("/prompts/{prompt_id}/versions/{version}", summary="Refused: versions are immutable")
@requires(Scope.SUBMIT)
async def edit_version(svc: Svc, caller: Principal, prompt_id: str, version: int) -> None:
    _prompts(svc)
    raise Conflict(IMMUTABLE)


@router.put("/prompts/{prompt_id}", summary="Refused: versions are immutable")
@router.patch("/prompts/{prompt_id}", summary="Refused: versions are immutable")
@requires(Scope.SUBMIT)
async def edit_prompt(svc: Svc, caller: Principal, prompt_id: str) -> None:
    _prompts(svc)
    raise Conflict(IMMUTABLE)


@router.get("/prompts/{prompt_id}/labels", summary="A prompt's labels and their versions")
@requires(Scope.READ)
async def list_labels(svc: Svc, caller: Principal, prompt_id: str) -> dict[str, Any]:
    labels = await _prompts(svc).labels(caller.tenant, prompt_id)
    return {"object": "prompt.labels", "id": prompt_id, "labels": labels}


@router.post("/prompts/{prompt_id}/labels/{label}", summary="Point a label at a version")
@requires(Scope.SUBMIT)
async def move_label(
    svc: Svc, caller: Principal, prompt_id: str, label: str, spec: LabelMove
) -> dict[str, Any]:
    moved, entry = await _prompts(svc).move_label(
        caller.tenant, prompt_id, label, spec.version, actor=_actor(caller),
        expected_version=spec.expected_version,
    )  # fmt: skip
    return {"object": "prompt.label", "id": prompt_id, "label": label, "version": moved.version,
            "revision": moved.revision, "from_version": entry.from_version if entry else
            moved.version, "moved": entry is not None}  # fmt: skip


@router.get("/prompts/{prompt_id}/audit", summary="Every change of a prompt: who, when, from → to")
@requires(Scope.READ)
async def list_audit(
    svc: Svc,
    caller: Principal,
    prompt_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    reg = _prompts(svc)
    await reg.version(caller.tenant, prompt_id, None)  # 404 for a prompt not the caller's
    found: list[AuditEntry] = await reg.store.audit_list(caller.tenant, prompt_id, after, limit + 1)
    data = [e.public() for e in found[:limit]]
    return {"object": "list", "data": data, "has_more": len(found) > limit}


async def rendered(
    svc: Services, url: str, body: Any, tenant: str
) -> tuple[Any, dict[str, Any] | None]:
    """``body`` with the stored prompt it names rendered into its messages, and the
    ``{id, version}`` to record on the job; a body naming none comes back as it is."""
    if not isinstance(body, dict) or body.get("prompt") is None:
        return body, None
    if url not in (CHAT_URL, RESPONSES_URL):
        return body, None  # /v1/completions' own "prompt" is its text
    return await _prompts(svc).render_body(tenant, url, body)
