"""The WebhookStore role's contract on every backend that keeps subscriptions (memory, SQLite,
PostgreSQL): records back whole, tenant scoping of get, list and delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from genspool.core.queue import Queue
from genspool.core.roles import Webhook
from tests.helpers.backends import BACKENDS, kind_url

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def hook(hook_id: str, tenant: str, batch_id: str | None = None) -> Webhook:
    return Webhook(hook_id, tenant, "https://x.example/h", ("batch.*", "job.failed"),
                   "whsec_AAAA", 1000.5, batch_id, "d")  # fmt: skip


async def test_subscriptions_come_back_whole_and_tenant_scoped(queue: Queue) -> None:
    store = queue.storage.webhooks
    assert store is not None
    a1, a2, b1 = hook("wh_1", "acme", "batch_9"), hook("wh_2", "acme"), hook("wh_3", "beta")
    for h in (a1, a2, b1):
        await store.webhook_put(h)
    assert await store.webhook_get("wh_1", "acme") == a1
    assert await store.webhook_get("wh_1", "beta") is None
    assert await store.webhook_list("acme") == [a1, a2]
    assert await store.webhook_list(None) == [a1, a2, b1]
    assert not await store.webhook_delete("wh_1", "beta")
    assert await store.webhook_delete("wh_1", None)
    assert not await store.webhook_delete("wh_1", "acme")
    assert await store.webhook_list(None) == [a2, b1]
