"""``genspool.AsyncClient``: the asyncio client of a genspool server, on ``httpx.AsyncClient``.

The same operations as :class:`genspool.Client`, awaited; listings and streams are async
iterators.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from genspool.client import _base
from genspool.client._base import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, Call, Config, Deadline, Pager
from genspool.client._batches import AsyncBatches, AsyncFiles
from genspool.client._errors import error_from_response, transport_error
from genspool.client._pipelines import AsyncPipelineMethods
from genspool.client._prompts import AsyncPrompts
from genspool.client._stores import AsyncStoreMethods
from genspool.client._types import ApiKey, CreatedApiKey, Job, JobEvent, JobStatus, Model
from genspool.exceptions import APIConnectionError

if TYPE_CHECKING:
    from genspool.client._ws import AsyncSubscription

__all__ = ["AsyncClient", "AsyncEventStream", "AsyncKeys"]

T = TypeVar("T")


class AsyncClient(AsyncPipelineMethods, AsyncStoreMethods):
    """A genspool server's jobs, dead letters, keys, models, files, batches, pipelines and
    vector stores, for asyncio.

    ``transport`` (e.g. ``httpx.MockTransport`` in tests) or a whole ``http_client`` replace
    the HTTP layer; a given ``http_client`` is the caller's to close. The WebSocket of
    :meth:`subscribe` is a connection of its own.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: _base.TimeoutTypes = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = Config.make(base_url, api_key, timeout)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport)
        self.keys = AsyncKeys(self)
        self.files = AsyncFiles(self)
        self.batches = AsyncBatches(self)
        self.prompts = AsyncPrompts(self)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- fan-out -------------------------------------------------------------------------------

    async def fanout(self, request: Mapping[str, Any]) -> Job:
        """Submit a fan-out (``branches``, ``event`` or ``map``, with ``aggregate``…); the
        parent job comes back at once. Its events carry one ``progress`` per branch."""
        return await self._run(_base.fanout(request))

    async def routes(self) -> builtins.list[dict[str, Any]]:
        """The fan-out routes, those of the models file included."""
        return await self._run(_base.routes())

    async def put_route(self, name: str, route: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a route (admin): ``pattern``, ``targets``, ``description``."""
        return await self._run(_base.put_route(name, route))

    async def delete_route(self, name: str) -> dict[str, Any]:
        return await self._run(_base.delete_route(name))

    async def test_route(self, pattern: Any, event: Any) -> bool:
        """Whether ``event`` matches ``pattern`` (an invalid pattern raises, naming its path)."""
        return await self._run(_base.test_route(pattern, event))

    # -- jobs ----------------------------------------------------------------------------------

    async def submit(
        self,
        url: str,
        body: Mapping[str, Any],
        *,
        priority: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        expires_at: float | None = None,
        custom_id: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Job:
        """Queue one OpenAI-style request (``url`` such as ``/v1/chat/completions``). With an
        ``idempotency_key`` already used, the earlier job comes back instead."""
        payload = _base.job_payload(
            url,
            body,
            priority=priority,
            metadata=metadata,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            expires_at=expires_at,
            custom_id=custom_id,
            extra_body=extra_body,
        )
        return await self._run(_base.submit(payload))

    async def submit_chat(
        self,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        *,
        priority: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        expires_at: float | None = None,
        custom_id: str | None = None,
        **params: Any,
    ) -> Job:
        """Queue a chat completion; ``params`` (``max_tokens``, ``temperature``...) go into
        its body."""
        return await self.submit(
            _base.CHAT,
            _base.chat_body(model, messages, params),
            priority=priority,
            metadata=metadata,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            expires_at=expires_at,
            custom_id=custom_id,
        )

    async def get(self, job_id: str) -> Job:
        return await self._run(_base.get(job_id))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; :class:`~genspool.exceptions.Conflict` if it ended."""
        return await self._run(_base.cancel(job_id))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> AsyncIterator[Job]:
        """Jobs, newest first, fetched ``limit`` at a time as the iteration goes on
        (``tenant``: an admin key's filter)."""
        pager = Pager.of("/v1/jobs", limit, status=status, model=model, tenant=tenant)
        return self._pages(pager)

    async def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 0.5) -> Job:
        """The job once it has ended; :class:`~genspool.exceptions.WaitTimeout` after
        ``timeout`` s. Follows its event stream, and polls only if that breaks."""
        deadline = Deadline(timeout)
        # A broken stream or a read timeout alike: the polls below decide.
        with contextlib.suppress(APIConnectionError):
            async with await self._events(job_id, deadline.remaining()) as events:
                async for event in events:
                    if event.ends or deadline.expired:
                        break
        while True:
            job = await self.get(job_id)
            if job.terminal:
                return job
            if deadline.expired:
                raise deadline.error(job)
            await asyncio.sleep(deadline.pause(poll_s))

    async def events(self, job_id: str) -> AsyncEventStream:
        """The job's events (Server-Sent Events) until its last one; iterate, then close (or
        use ``async with``)."""
        return await self._events(job_id, None)

    def subscribe(self, ids: Iterable[str] | None = None) -> AsyncSubscription:
        """Events of many jobs over one WebSocket. ``async with client.subscribe(ids) as sub:``,
        then iterate ``sub``: it ends once every job subscribed to has ended; ``sub.add()``
        subscribes to more. Without ``ids`` it runs until closed."""
        from genspool.client._ws import AsyncSubscription

        return AsyncSubscription(self._config, ids)

    # -- dead letters, models ------------------------------------------------------------------

    def dead_letters(
        self, *, model: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> AsyncIterator[Job]:
        """Jobs that failed for good, newest first, fetched ``limit`` at a time."""
        return self._pages(Pager.of("/v1/dlq", limit, model=model, tenant=tenant))

    async def replay(self, job_id: str) -> Job:
        """Queue a dead-lettered job again (its attempts start over)."""
        return await self._run(_base.replay(job_id))

    async def models(self) -> builtins.list[Model]:
        return await self._run(_base.models())

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        response = await self._send(call, self._config.timeout, stream=False)
        return call.parse(response.json())

    async def _send(
        self, call: Call[Any], timeout: httpx.Timeout, *, stream: bool
    ) -> httpx.Response:
        request = self._config.request(self._http, call, timeout)
        try:
            response = await self._http.send(request, stream=stream)
            if response.is_error:
                await response.aread()
                await response.aclose()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    async def _pages(self, pager: Pager) -> AsyncIterator[Job]:
        while not pager.done:
            for job in pager.advance(await self._run(pager.call())):
                yield job

    async def _events(self, job_id: str, read_timeout: float | None) -> AsyncEventStream:
        call: Call[None] = Call("GET", _base.events_path(job_id), lambda _: None)
        timeout = self._config.stream_timeout(read_timeout)
        response = await self._send(call, timeout, stream=True)
        return AsyncEventStream(response, self.base_url)


class AsyncEventStream:
    """The events of one job's Server-Sent Events response."""

    def __init__(self, response: httpx.Response, base_url: str) -> None:
        self._response, self._base_url = response, base_url

    async def __aiter__(self) -> AsyncIterator[JobEvent]:
        decoder = _base.SSEDecoder()
        try:
            async for line in self._response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event
        except httpx.TransportError as exc:
            raise transport_error(exc, self._base_url) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncKeys:
    """API keys (``client.keys``); every call needs an ``admin`` key."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[ApiKey]:
        return await self._client._run(_base.list_keys())

    async def create(
        self,
        tenant: str,
        scopes: Iterable[str],
        *,
        name: str | None = None,
        rpm: int | None = None,
    ) -> CreatedApiKey:
        """A new key; its secret (``.key``) is shown this once."""
        return await self._client._run(_base.create_key(tenant, scopes, name, rpm))

    async def revoke(self, key_id: str) -> ApiKey:
        return await self._client._run(_base.revoke_key(key_id))
