"""The prompt registry's records (:mod:`genspool.core.prompts` has the rules): a version of a
prompt, where a label points, an entry of the audit, and each as the SQL backends store it. Apart
from the rules so that the storage roles (:mod:`genspool.core.roles`) can name them while the
rules' registry names the roles."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from genspool._ids import random_hex

__all__ = [
    "AuditEntry",
    "PromptLabel",
    "PromptVersion",
    "audit_from_doc",
    "audit_to_doc",
    "label_from_doc",
    "label_to_doc",
    "new_audit_id",
    "version_from_doc",
    "version_to_doc",
]


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One version of a prompt: never edited once stored. ``template`` is the text of a
    ``text`` prompt, or the messages (``{"role", "content"}``) of a ``chat`` prompt."""

    tenant: str
    prompt_id: str
    version: int
    kind: str
    template: str | tuple[tuple[str, str], ...]  # text, or (role, content) pairs
    variables: tuple[str, ...]
    created_at: float
    created_by: str | None = None
    description: str | None = None

    def public(self, labels: Sequence[str] = ()) -> dict[str, Any]:
        template: Any = self.template
        if not isinstance(self.template, str):
            template = [{"role": r, "content": c} for r, c in self.template]
        return {
            "object": "prompt", "id": self.prompt_id, "version": self.version,
            "kind": self.kind, "template": template, "variables": list(self.variables),
            "labels": sorted(labels), "description": self.description,
            "created_at": self.created_at, "created_by": self.created_by,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class PromptLabel:
    """Where a label of a prompt points. ``revision`` grows by one with each move (the first
    write is 1): the compare-and-set of :meth:`PromptStore.label_put` is on it."""

    tenant: str
    prompt_id: str
    label: str
    version: int
    revision: int
    updated_at: float
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of a prompt: a version created (``label`` is ``latest``) or a label moved;
    ``from_version`` is None when the label pointed nowhere before."""

    id: str  # "pa_" and a sortable hex
    tenant: str
    prompt_id: str
    action: str  # "version.created" or "label.moved"
    label: str
    from_version: int | None
    to_version: int
    at: float
    actor: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "object": "prompt.audit", "id": self.id, "prompt_id": self.prompt_id,
            "action": self.action, "label": self.label, "from_version": self.from_version,
            "to_version": self.to_version, "at": self.at, "actor": self.actor,
        }  # fmt: skip


def new_audit_id() -> str:
    return f"pa_{time.time_ns():x}{random_hex(5)}"


# -- documents, as the SQL backends store them ---------------------------------------------------


def version_to_doc(v: PromptVersion) -> bytes:
    return orjson.dumps(
        {"tenant": v.tenant, "prompt_id": v.prompt_id, "version": v.version, "kind": v.kind,
         "template": v.template, "variables": v.variables, "created_at": v.created_at,
         "created_by": v.created_by, "description": v.description}
    )  # fmt: skip


def version_from_doc(doc: bytes | memoryview) -> PromptVersion:
    d: dict[str, Any] = orjson.loads(bytes(doc))
    raw = d["template"]
    template = raw if isinstance(raw, str) else tuple((r, c) for r, c in raw)
    return PromptVersion(
        d["tenant"], d["prompt_id"], d["version"], d["kind"], template, tuple(d["variables"]),
        d["created_at"], d.get("created_by"), d.get("description"),
    )  # fmt: skip


def label_to_doc(label: PromptLabel) -> bytes:
    return orjson.dumps([label.version, label.revision, label.updated_at, label.updated_by])


def label_from_doc(tenant: str, prompt_id: str, name: str, doc: bytes | memoryview) -> PromptLabel:
    version, revision, updated_at, updated_by = orjson.loads(bytes(doc))
    return PromptLabel(tenant, prompt_id, name, version, revision, updated_at, updated_by)


def audit_to_doc(entry: AuditEntry) -> bytes:
    return orjson.dumps(
        [entry.action, entry.label, entry.from_version, entry.to_version, entry.at, entry.actor]
    )


def audit_from_doc(
    entry_id: str, tenant: str, prompt_id: str, doc: bytes | memoryview
) -> AuditEntry:
    action, label, from_v, to_v, at, actor = orjson.loads(bytes(doc))
    return AuditEntry(entry_id, tenant, prompt_id, action, label, from_v, to_v, at, actor)
