"""Webhook subscriptions: create (the secret shown once), list, delete; tenant-scoped.

Another tenant's subscription, like a missing one, is 404 (an admin key reaches every
tenant's). A deployment whose store keeps no subscriptions (a Redis or NATS server alone)
answers 501, as for files and batches.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.core.keys import Scope
from genspool.core.roles import Webhook
from genspool.exceptions import ConfigError
from genspool.webhooks.dispatch import Webhooks

__all__ = ["WebhookCreate", "router"]

router = APIRouter(prefix="/v1", tags=["webhooks"])


class WebhooksUnavailable(ConfigError):
    """The deployment's store keeps no webhook subscriptions (a Redis or NATS server alone)."""

    status_code = 501
    code = "webhooks_unavailable"


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Where events are POSTed (http or https).")
    events: list[str] = Field(
        description="Patterns: '*', 'batch.*', 'job.*', 'pipeline_run.*', or an event type such"
        " as 'batch.completed' or 'job.failed'."
    )
    batch_id: str | None = Field(None, description="Only the events of this batch and its lines.")
    description: str | None = Field(None, max_length=500)


def _webhooks(svc: Services) -> Webhooks:
    if svc.webhooks is None:
        raise WebhooksUnavailable(
            "this deployment keeps no webhooks: its store is a Redis or NATS server alone; run"
            " with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL set"
            " to the Redis or NATS server (the queue)"
        )
    return svc.webhooks


def _json(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id, "object": "webhook", "url": hook.url, "events": list(hook.events),
        "batch_id": hook.batch_id, "description": hook.description,
        "created_at": int(hook.created_at), "tenant": hook.tenant,
    }  # fmt: skip


@router.post(
    "/webhooks", status_code=201, summary="Subscribe a URL to events; the secret is shown only here"
)
@requires(Scope.SUBMIT)
async def create_webhook(svc: Svc, caller: Principal, spec: WebhookCreate) -> dict[str, Any]:
    hook = await _webhooks(svc).create(
        caller.tenant, spec.url, spec.events, batch_id=spec.batch_id, description=spec.description
    )
    return {**_json(hook), "secret": hook.secret}


@router.get("/webhooks", summary="Webhook subscriptions (never their secrets)")
@requires(Scope.READ)
async def list_webhooks(svc: Svc, caller: Principal) -> dict[str, Any]:
    found = await _webhooks(svc).subscriptions(caller.sees)
    return {"object": "list", "data": [_json(h) for h in found]}


@router.delete("/webhooks/{webhook_id}", summary="Delete a subscription; pending deliveries stop")
@requires(Scope.SUBMIT)
async def delete_webhook(svc: Svc, caller: Principal, webhook_id: str) -> dict[str, Any]:
    await _webhooks(svc).delete(webhook_id, caller.sees)
    return {"id": webhook_id, "object": "webhook.deleted", "deleted": True}
