"""The WebhookStore role of the PostgreSQL backend: subscriptions in the ``webhooks`` table
(migration 8), each call one statement on a pooled connection."""

from __future__ import annotations

import psycopg

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends._webhooks import webhook_from_doc, webhook_to_doc
from genspool.backends.postgres._pool import Connections
from genspool.core.roles import Webhook, WebhookStore

__all__ = ["PostgresWebhooks"]

Q = {name: text.encode() for name, text in load_queries("postgres", source="webhooks.sql").items()}
_ERRORS = (psycopg.Error,)


class PostgresWebhooks(WebhookStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    kind: str
    shown_url: str
    _db: Connections

    @translated("webhook_put", _ERRORS)
    async def webhook_put(self, hook: Webhook) -> None:
        args = {"id": hook.id, "tenant": hook.tenant, "doc": webhook_to_doc(hook)}
        await self._db.count(Q["webhook_put"], args)

    @translated("webhook_get", _ERRORS)
    async def webhook_get(self, hook_id: str, tenant: str | None) -> Webhook | None:
        found = await self._db.fetch(Q["webhook_get"], {"id": hook_id, "tenant": tenant})
        return webhook_from_doc(found[0][0]) if found else None

    @translated("webhook_list", _ERRORS)
    async def webhook_list(self, tenant: str | None) -> list[Webhook]:
        found = await self._db.fetch(Q["webhook_list"], {"tenant": tenant})
        return [webhook_from_doc(r[0]) for r in found]

    @translated("webhook_delete", _ERRORS)
    async def webhook_delete(self, hook_id: str, tenant: str | None) -> bool:
        args = {"id": hook_id, "tenant": tenant}
        return bool(await self._db.count(Q["webhook_delete"], args))
