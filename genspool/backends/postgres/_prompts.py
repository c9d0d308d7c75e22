"""The PromptStore role of the PostgreSQL backend: versions, labels and their audit in the
``prompt_versions``, ``prompt_labels`` and ``prompt_audit`` tables (migration 11), each call one
statement on a pooled connection (a write and its audit entry one statement: a CTE)."""

from __future__ import annotations

from genspool.backends._errors import translated
from genspool.backends._prompts import audit_row, label_row, version_row
from genspool.backends._sql import load_queries
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.prompt_records import (
    AuditEntry,
    PromptLabel,
    PromptVersion,
    audit_from_doc,
    label_from_doc,
    version_from_doc,
)
from genspool.core.roles import PromptStore

__all__ = ["PostgresPrompts"]

Q = encoded(load_queries("postgres", source="prompts.sql"))


class PostgresPrompts(PostgresRecords, PromptStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("prompt_put", ERRORS)
    async def prompt_put(self, version: PromptVersion, audit: AuditEntry) -> bool:
        args = {**version_row(version), **audit_row(audit)}
        return bool(await self._written(Q["prompt_put"], args))

    @translated("prompt_get", ERRORS)
    async def prompt_get(
        self, tenant: str, prompt_id: str, version: int | None
    ) -> PromptVersion | None:
        args = {"tenant": tenant, "prompt_id": prompt_id, "version": version}
        return await self._doc(Q["prompt_get"], args, version_from_doc)

    @translated("prompt_versions", ERRORS)
    async def prompt_versions(
        self, tenant: str, prompt_id: str, before: int | None, limit: int
    ) -> list[PromptVersion]:
        args = {"tenant": tenant, "prompt_id": prompt_id, "before": before, "limit": limit}
        return await self._docs(Q["prompt_versions"], args, version_from_doc)

    @translated("prompt_list", ERRORS)
    async def prompt_list(self, tenant: str, after: str | None, limit: int) -> list[PromptVersion]:
        args = {"tenant": tenant, "after": after or "", "limit": limit}
        return await self._docs(Q["prompt_list"], args, version_from_doc)

    @translated("label_get", ERRORS)
    async def label_get(self, tenant: str, prompt_id: str, label: str) -> PromptLabel | None:
        args = {"tenant": tenant, "prompt_id": prompt_id, "label": label}
        rows = await self._rows(Q["label_get"], args)
        return label_from_doc(tenant, prompt_id, *rows[0]) if rows else None

    @translated("label_list", ERRORS)
    async def label_list(self, tenant: str, prompt_id: str) -> list[PromptLabel]:
        rows = await self._rows(Q["label_list"], {"tenant": tenant, "prompt_id": prompt_id})
        return [label_from_doc(tenant, prompt_id, name, doc) for name, doc in rows]

    @translated("label_put", ERRORS)
    async def label_put(self, label: PromptLabel, revision: int, audit: AuditEntry) -> bool:
        query = Q["label_create"] if revision == 0 else Q["label_move"]
        args = {**label_row(label, revision), **audit_row(audit)}
        return bool(await self._written(query, args))

    @translated("audit_list", ERRORS)
    async def audit_list(
        self, tenant: str, prompt_id: str, after: str | None, limit: int
    ) -> list[AuditEntry]:
        args = {"tenant": tenant, "prompt_id": prompt_id, "after": after or "", "limit": limit}
        rows = await self._rows(Q["audit_list"], args)
        return [audit_from_doc(i, tenant, prompt_id, doc) for i, doc in rows]
