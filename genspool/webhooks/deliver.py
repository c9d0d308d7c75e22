"""The delivery of one webhook: the ``webhook`` provider, which serves
:data:`~genspool.config.WEBHOOK_MODEL` in every worker.

Each delivery job is its own call (``per_request``): a slow receiver holds up no other. The
provider reads the subscription (its URL and secret: the secret never sits in a job's body,
which its owner can read back), signs the body at this attempt's time, and POSTs it. The answer
decides the job's fate the way the queue decides any model call's:

* 2xx: delivered (the job succeeds);
* 408, 429, 5xx, a refused connection or a timeout: retried with backoff, a ``Retry-After``
  honoured, until the model's ``max_attempts``;
* any other 4xx: the receiver refuses it, and asking again will not help: dead-lettered at
  once, its status and the start of its answer in the job's error.

A subscription deleted meanwhile ends its deliveries as succeeded with ``skipped``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from genspool.core.models import Models
from genspool.core.queue import Queue
from genspool.core.roles import WebhookStore
from genspool.exceptions import ModelError
from genspool.providers.base import Provider, Request, Result
from genspool.providers.plugins import ModelSpec, ProviderOptions, ProviderPlugin, options_of
from genspool.webhooks.dispatch import DELIVER_URL, webhooks_of
from genspool.webhooks.signing import signed_headers

__all__ = ["DeliveryProvider", "plugin"]

#: Statuses a receiver may answer again later (a timeout, too many requests).
_RETRYABLE_4XX = frozenset({408, 429})
_SHOWN_CHARS = 200


class DeliveryOptions(ProviderOptions):
    #: Longest wait for a receiver's answer, in seconds.
    timeout_s: float = 10.0


class DeliveryProvider(Provider):
    endpoints = frozenset({DELIVER_URL})
    per_request = True

    def __init__(self, model: str, timeout_s: float) -> None:
        super().__init__(model)
        self.timeout_s = timeout_s
        self.store: WebhookStore | None = None
        self._client: httpx.AsyncClient | None = None

    def bind(self, queue: Queue, models: Models) -> None:
        """The worker's queue: the store of subscriptions, and the hooks that make deliveries
        of jobs this worker ends (its process may run no API)."""
        self.store = queue.storage.webhooks
        webhooks_of(queue)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Result:
        if self.store is None or request.job is None:
            raise ModelError("a webhook is delivered as a job in a worker", retryable=False)
        hook_id = str(request.body.get("webhook_id", ""))
        hook = await self.store.webhook_get(hook_id, request.job.tenant)
        if hook is None:
            return {"skipped": f"webhook {hook_id} was deleted"}
        body = orjson.dumps(request.body.get("payload"))
        headers = signed_headers(hook.secret, request.job.id, body, now=time.time())
        headers["content-type"] = "application/json"
        answer = await self._post(hook.url, body, headers)
        return {"status_code": answer.status_code, "url": hook.url}

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        try:
            answer = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise ModelError(
                f"webhook to {url} not delivered: {type(exc).__name__}: {exc}"
            ) from exc
        if answer.is_success:
            return answer
        raise _refused(url, answer)


def _refused(url: str, answer: httpx.Response) -> ModelError:
    code = answer.status_code
    retryable = code in _RETRYABLE_4XX or code >= 500 or code < 400
    text = answer.text[:_SHOWN_CHARS]
    error = ModelError(
        f"webhook receiver {url} answered {code}: {text!r}",
        retryable=retryable,
        retry_after=_retry_after(answer.headers.get("retry-after")),
    )
    error.code = "webhook_refused" if not retryable else "webhook_failed"
    return error


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` of seconds (a date is rare from receivers: ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _create(config: ModelSpec, env: Any) -> Provider:
    return DeliveryProvider(config.name, options_of(config, DeliveryOptions).timeout_s)


plugin = ProviderPlugin(
    name="webhook",
    options=DeliveryOptions,
    endpoints=frozenset({DELIVER_URL}),
    create=_create,
)
