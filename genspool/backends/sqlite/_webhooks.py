"""The WebhookStore role of the SQLite backend: subscriptions in the ``webhooks`` table
(migration 9), reads on the reader's connection, writes each one transaction on the writer's."""

from __future__ import annotations

import sqlite3

from genspool.backends._errors import translated
from genspool.backends._sql import load_queries
from genspool.backends._webhooks import webhook_from_doc, webhook_to_doc
from genspool.backends.sqlite._conn import Connection, write
from genspool.core.roles import Webhook, WebhookStore

__all__ = ["SQLiteWebhooks"]

Q = load_queries("sqlite", source="webhooks.sql")
_ERRORS = (sqlite3.Error,)


class SQLiteWebhooks(WebhookStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    kind: str
    shown_url: str
    _w: Connection
    _r: Connection

    @translated("webhook_put", _ERRORS)
    async def webhook_put(self, hook: Webhook) -> None:
        row = (hook.id, hook.tenant, webhook_to_doc(hook))
        await self._w.run(write(lambda db: db.execute(Q["webhook_put"], row)))

    @translated("webhook_get", _ERRORS)
    async def webhook_get(self, hook_id: str, tenant: str | None) -> Webhook | None:
        args = {"id": hook_id, "tenant": tenant}
        row = await self._r.run(lambda db: db.execute(Q["webhook_get"], args).fetchone())
        return None if row is None else webhook_from_doc(row[0])

    @translated("webhook_list", _ERRORS)
    async def webhook_list(self, tenant: str | None) -> list[Webhook]:
        args = {"tenant": tenant}
        rows = await self._r.run(lambda db: db.execute(Q["webhook_list"], args).fetchall())
        return [webhook_from_doc(r[0]) for r in rows]

    @translated("webhook_delete", _ERRORS)
    async def webhook_delete(self, hook_id: str, tenant: str | None) -> bool:
        args = {"id": hook_id, "tenant": tenant}
        count = await self._w.run(write(lambda db: db.execute(Q["webhook_delete"], args).rowcount))
        return bool(count)
