"""The WebhookStore role of the SQLite backend: subscriptions in the ``webhooks`` table
(migration 9), reads on the reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends._webhooks import webhook_from_doc, webhook_to_doc
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.roles import Webhook, WebhookStore

__all__ = ["SQLiteWebhooks"]

Q = load_queries("sqlite", source="webhooks.sql")


class SQLiteWebhooks(SQLiteRecords, WebhookStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    @translated("webhook_put", ERRORS)
    async def webhook_put(self, hook: Webhook) -> None:
        await self._written(Q["webhook_put"], (hook.id, hook.tenant, webhook_to_doc(hook)))

    @translated("webhook_get", ERRORS)
    async def webhook_get(self, hook_id: str, tenant: str | None) -> Webhook | None:
        args = {"id": hook_id, "tenant": tenant}
        return await self._doc(Q["webhook_get"], args, webhook_from_doc)

    @translated("webhook_list", ERRORS)
    async def webhook_list(self, tenant: str | None) -> list[Webhook]:
        return await self._docs(Q["webhook_list"], {"tenant": tenant}, webhook_from_doc)

    @translated("webhook_delete", ERRORS)
    async def webhook_delete(self, hook_id: str, tenant: str | None) -> bool:
        args = {"id": hook_id, "tenant": tenant}
        return bool(await self._written(Q["webhook_delete"], args))
