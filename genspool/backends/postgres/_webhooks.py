"""The WebhookStore role of the PostgreSQL backend: subscriptions in the ``webhooks`` table
(migration 8), each call one statement on a pooled connection."""

from __future__ import annotations

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends._webhooks import webhook_from_doc, webhook_to_doc
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.roles import Webhook, WebhookStore

__all__ = ["PostgresWebhooks"]

Q = encoded(load_queries("postgres", source="webhooks.sql"))


class PostgresWebhooks(PostgresRecords, WebhookStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    @translated("webhook_put", ERRORS)
    async def webhook_put(self, hook: Webhook) -> None:
        args = {"id": hook.id, "tenant": hook.tenant, "doc": webhook_to_doc(hook)}
        await self._written(Q["webhook_put"], args)

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
