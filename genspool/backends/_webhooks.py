"""What the backends' WebhookStore roles share: a subscription's record as one JSON document,
and a mixin that fills the role from a process's memory (the memory backend)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from genspool.core.roles import Webhook, WebhookStore

__all__ = ["MemoryWebhooks", "webhook_from_doc", "webhook_to_doc"]


def webhook_to_doc(hook: Webhook) -> bytes:
    return orjson.dumps(dataclasses.asdict(hook))


def webhook_from_doc(doc: bytes | memoryview) -> Webhook:
    fields: dict[str, Any] = orjson.loads(bytes(doc))
    fields["events"] = tuple(fields["events"])
    return Webhook(**fields)


class MemoryWebhooks(WebhookStore):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: records in a dict of the
    backend's shared state (``_webhooks``), in insertion (creation) order."""

    _webhooks: dict[str, Webhook]

    async def webhook_put(self, hook: Webhook) -> None:
        self._webhooks[hook.id] = hook

    async def webhook_get(self, hook_id: str, tenant: str | None) -> Webhook | None:
        found = self._webhooks.get(hook_id)
        return found if found is not None and tenant in (None, found.tenant) else None

    async def webhook_list(self, tenant: str | None) -> list[Webhook]:
        return [h for h in self._webhooks.values() if tenant in (None, h.tenant)]

    async def webhook_delete(self, hook_id: str, tenant: str | None) -> bool:
        if await self.webhook_get(hook_id, tenant) is None:
            return False
        del self._webhooks[hook_id]
        return True
