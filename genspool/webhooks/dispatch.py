"""Subscriptions and the enqueueing of deliveries: :class:`Webhooks`, one per queue.

Every event that a subscription matches becomes a delivery JOB of the internal model
:data:`~genspool.config.WEBHOOK_MODEL` (:mod:`genspool.webhooks.deliver` POSTs it), so retries
with backoff, the dead-letter queue and at-least-once delivery are the queue's own; its
idempotency key ``webhook:{subscription}:{event}`` enqueues an event once however often it is
seen. The events come from two hooks: :attr:`Queue.on_ended` (a job's end, decided in one
place, the queue facade) and :attr:`BatchRunner.on_end` (a batch's).

The hook on jobs runs for every job a worker finishes, so it must cost nothing when nobody
listens: subscriptions are held in memory, all of them, and read again from the store at most
every ``refresh_s`` (a subscription made in another process takes effect here within that
time; one made in this process, at once). A job of a tenant with no subscription is dropped
after one dict lookup, with no store read.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from genspool._ids import random_hex
from genspool.config import WEBHOOK_MODEL
from genspool.core.batch import Batch
from genspool.core.job import Job
from genspool.core.models import TRACEPARENT
from genspool.core.pipeline import PipelineRun
from genspool.core.queue import Queue
from genspool.core.roles import Webhook, WebhookStore
from genspool.exceptions import InvalidRequest, NotFound
from genspool.webhooks.events import (
    WebhookEvent,
    batch_event,
    check_patterns,
    job_event,
    matches,
    run_event,
)
from genspool.webhooks.signing import new_secret

__all__ = ["DELIVER_URL", "Webhooks", "webhooks_of"]

log = logging.getLogger("genspool.webhooks")

#: The url of a delivery job.
DELIVER_URL = "/v1/webhooks/deliver"
MAX_URL_CHARS = 2048
_ATTACHED: weakref.WeakKeyDictionary[Queue, Webhooks] = weakref.WeakKeyDictionary()


def webhooks_of(queue: Queue) -> Webhooks | None:
    """The queue's :class:`Webhooks`, made and hooked on first call; None when its store keeps
    no subscriptions. One per queue, however many parts (API, worker, batch runner) ask."""
    store = queue.storage.webhooks
    if store is None:
        return None
    if queue not in _ATTACHED:
        hooks = _ATTACHED[queue] = Webhooks(store, queue)
        queue.on_ended.append(hooks.jobs_ended)
    return _ATTACHED[queue]


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise InvalidRequest(
            f"url: {url[:100]!r} is not an http(s) URL of at most {MAX_URL_CHARS} characters",
            param="url",
        )
    return url


class Webhooks:
    #: How old this process's copy of the subscriptions may get.
    refresh_s = 2.0

    def __init__(self, store: WebhookStore, queue: Queue) -> None:
        self.store, self.queue = store, queue
        self._by_tenant: dict[str, list[Webhook]] = {}
        self._loaded_at = float("-inf")
        self._loading = asyncio.Lock()

    # -- subscriptions -------------------------------------------------------------------------

    async def create(
        self, tenant: str, url: str, events: list[str], *, batch_id: str | None = None,
        description: str | None = None,
    ) -> Webhook:  # fmt: skip
        """A new subscription; its ``secret`` is shown to its owner only in this answer."""
        hook = Webhook(
            id=f"wh_{random_hex(12)}", tenant=tenant, url=check_url(url),
            events=check_patterns(events), secret=new_secret(), created_at=self.queue.clock(),
            batch_id=batch_id, description=description,
        )  # fmt: skip
        await self.store.webhook_put(hook)
        self._by_tenant.setdefault(tenant, []).append(hook)
        return hook

    async def subscriptions(self, tenant: str | None) -> list[Webhook]:
        return await self.store.webhook_list(tenant)

    async def delete(self, hook_id: str, tenant: str | None) -> None:
        if not await self.store.webhook_delete(hook_id, tenant):
            raise NotFound(f"no webhook {hook_id!r}")
        for hooks in self._by_tenant.values():
            hooks[:] = [h for h in hooks if h.id != hook_id]

    async def _current(self) -> dict[str, list[Webhook]]:
        """The subscriptions by tenant, read again when older than ``refresh_s``."""
        if self.queue.clock() - self._loaded_at < self.refresh_s:
            return self._by_tenant
        async with self._loading:
            if self.queue.clock() - self._loaded_at >= self.refresh_s:
                fresh: dict[str, list[Webhook]] = {}
                for hook in await self.store.webhook_list(None):
                    fresh.setdefault(hook.tenant, []).append(hook)
                self._by_tenant, self._loaded_at = fresh, self.queue.clock()
        return self._by_tenant

    # -- events --------------------------------------------------------------------------------

    async def jobs_ended(self, jobs: Sequence[Job]) -> None:
        """The hook on the queue: deliveries of the ended jobs' events (none of deliveries)."""
        subs = await self._current()
        ended = [j for j in jobs if j.tenant in subs and j.model != WEBHOOK_MODEL["name"]]
        if ended:
            await self.emit([job_event(j) for j in ended])

    async def batch_ended(self, batch: Batch) -> None:
        """The hook on the batch runner."""
        await self.emit([batch_event(batch)])

    async def run_ended(self, run: PipelineRun) -> None:
        """The hook on the pipeline runner."""
        await self.emit([run_event(run)])

    async def emit(self, events: Sequence[WebhookEvent]) -> list[Job]:
        """Enqueue a delivery of each event to each subscription that matches it (a pipeline
        run calls this with its own ``pipeline_run.*`` events)."""
        subs = await self._current()
        jobs = [
            _delivery(hook, event)
            for event in events
            for hook in subs.get(event.tenant, ())
            if matches(hook.events, event.type)
            and (hook.batch_id is None or hook.batch_id == event.batch_id)
        ]
        return await self.queue.submit_many(jobs) if jobs else []


def _delivery(hook: Webhook, event: WebhookEvent) -> Job:
    body: dict[str, Any] = {"webhook_id": hook.id, "payload": event.payload()}
    metadata = {"webhook_id": hook.id, "event_id": event.id, "event_type": event.type}
    if event.trace is not None:  # tracing: the push is in the trace of the job it is about
        metadata[TRACEPARENT] = event.trace
    return Job(
        url=DELIVER_URL, body=body, model=WEBHOOK_MODEL["name"], tenant=hook.tenant,
        max_attempts=int(WEBHOOK_MODEL["max_attempts"]),
        idempotency_key=f"webhook:{hook.id}:{event.id}", metadata=metadata,
    )  # fmt: skip
