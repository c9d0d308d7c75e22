"""What the backends' PromptStore roles share: the rows of a version, a label and an audit entry
as the SQL backends write them, and a mixin that fills the role from a process's memory (the
memory backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genspool.core.prompt_records import (
    AuditEntry,
    PromptLabel,
    PromptVersion,
    audit_to_doc,
    label_to_doc,
    version_to_doc,
)
from genspool.core.roles import PromptStore

__all__ = ["MemoryPrompts", "PromptState", "audit_row", "label_row", "version_row"]


def version_row(v: PromptVersion) -> dict[str, Any]:
    return {"tenant": v.tenant, "prompt_id": v.prompt_id, "version": v.version,
            "doc": version_to_doc(v)}  # fmt: skip


def label_row(label: PromptLabel, revision: int) -> dict[str, Any]:
    """``revision``: the stored revision the write expects (0: none stored)."""
    return {
        "tenant": label.tenant, "prompt_id": label.prompt_id, "label": label.label,
        "revision": label.revision, "expected": revision, "ldoc": label_to_doc(label),
    }  # fmt: skip


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    return {"audit_id": entry.id, "tenant": entry.tenant, "prompt_id": entry.prompt_id,
            "adoc": audit_to_doc(entry)}  # fmt: skip


@dataclass
class PromptState:
    """A memory backend's prompts (shared by the backends of one name)."""

    versions: dict[tuple[str, str], dict[int, PromptVersion]] = field(default_factory=dict)
    labels: dict[tuple[str, str], dict[str, PromptLabel]] = field(default_factory=dict)
    audit: dict[tuple[str, str], dict[str, AuditEntry]] = field(default_factory=dict)

    def clear(self) -> None:
        for part in (self.versions, self.labels, self.audit):
            part.clear()


class MemoryPrompts(PromptStore):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: records in the backend's
    shared state (``_prompts``). Records are frozen: stored and handed out as they are; no
    method awaits, so each is atomic on the loop."""

    _prompts: PromptState

    def _audit(self, entry: AuditEntry) -> None:
        self._prompts.audit.setdefault((entry.tenant, entry.prompt_id), {})[entry.id] = entry

    async def prompt_put(self, version: PromptVersion, audit: AuditEntry) -> bool:
        stored = self._prompts.versions.setdefault((version.tenant, version.prompt_id), {})
        if version.version in stored:
            return False
        stored[version.version] = version
        self._audit(audit)
        return True

    async def prompt_get(
        self, tenant: str, prompt_id: str, version: int | None
    ) -> PromptVersion | None:
        stored = self._prompts.versions.get((tenant, prompt_id)) or {}
        if version is None:
            return stored[max(stored)] if stored else None
        return stored.get(version)

    async def prompt_versions(
        self, tenant: str, prompt_id: str, before: int | None, limit: int
    ) -> list[PromptVersion]:
        stored = self._prompts.versions.get((tenant, prompt_id)) or {}
        found = [v for n, v in stored.items() if before is None or n < before]
        return sorted(found, key=lambda v: v.version, reverse=True)[:limit]

    async def prompt_list(self, tenant: str, after: str | None, limit: int) -> list[PromptVersion]:
        found = [
            stored[max(stored)]
            for (t, prompt_id), stored in self._prompts.versions.items()
            if t == tenant and stored and (after is None or prompt_id > after)
        ]
        return sorted(found, key=lambda v: v.prompt_id)[:limit]

    async def label_get(self, tenant: str, prompt_id: str, label: str) -> PromptLabel | None:
        return (self._prompts.labels.get((tenant, prompt_id)) or {}).get(label)

    async def label_list(self, tenant: str, prompt_id: str) -> list[PromptLabel]:
        stored = self._prompts.labels.get((tenant, prompt_id)) or {}
        return [stored[name] for name in sorted(stored)]

    async def label_put(self, label: PromptLabel, revision: int, audit: AuditEntry) -> bool:
        stored = self._prompts.labels.setdefault((label.tenant, label.prompt_id), {})
        current = stored.get(label.label)
        if (0 if current is None else current.revision) != revision:
            return False
        stored[label.label] = label
        self._audit(audit)
        return True

    async def audit_list(
        self, tenant: str, prompt_id: str, after: str | None, limit: int
    ) -> list[AuditEntry]:
        stored = self._prompts.audit.get((tenant, prompt_id)) or {}
        return [stored[i] for i in sorted(stored) if after is None or i > after][:limit]
