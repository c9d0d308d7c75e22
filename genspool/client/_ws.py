"""Subscriptions to many jobs' events over the API's WebSocket (``/v1/ws``).

The protocol (``genspool/api/routes_push.py``): the client sends ``{"subscribe": [ids]}`` as
often as it likes; the server sends one JSON event per state change, token deltas of running
chat jobs, a final event for a job that has already ended, ``not_found`` for a job the caller
cannot see, and ``{"error": ...}`` for a message it cannot read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

import httpx
import orjson
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from genspool.client._base import Config
from genspool.client._errors import error_from_response
from genspool.client._types import JobEvent
from genspool.exceptions import (
    APIConnectionError,
    APITimeoutError,
    GenspoolError,
    InvalidRequest,
)

__all__ = ["AsyncSubscription", "Subscription"]


class _Watch:
    """Which jobs are subscribed to and which have not ended yet."""

    def __init__(self, ids: Iterable[str] | None) -> None:
        self.open_ended = ids is None
        self.first = list(ids or ())
        self.pending: set[str] = set()

    @property
    def finished(self) -> bool:
        return not self.open_ended and not self.pending

    def subscribe(self, ids: Iterable[str]) -> str | None:
        """The message that subscribes to ``ids`` (None for none)."""
        wanted = list(ids)
        self.pending.update(wanted)
        return orjson.dumps({"subscribe": wanted}).decode() if wanted else None

    def read(self, message: str | bytes) -> JobEvent:
        data = orjson.loads(message)
        if "error" in data and "id" not in data:
            raise InvalidRequest(f"the server refused a message: {data['error'].get('message')}")
        event = JobEvent.from_wire(data)
        if event.ends:
            self.pending.discard(event.id)
        return event


def _connect_error(exc: Exception, url: str) -> GenspoolError:
    if isinstance(exc, InvalidStatus):  # refused at the handshake, e.g. 401: the HTTP errors
        r = exc.response
        answer = httpx.Response(
            r.status_code, headers=list(r.headers.raw_items()), content=bytes(r.body)
        )
        return error_from_response(answer)
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"no WebSocket handshake from {url} in time")
    return APIConnectionError(f"cannot open a WebSocket to {url}: {exc}")


def _closed_error(exc: ConnectionClosed) -> APIConnectionError:
    frame = exc.rcvd
    why = f" ({frame.code}: {frame.reason})" if frame is not None and frame.reason else ""
    return APIConnectionError(f"the WebSocket closed before every job ended{why}")


class Subscription:
    """``with client.subscribe(ids) as sub: for event in sub: ...`` (blocking)."""

    def __init__(self, config: Config, ids: Iterable[str] | None) -> None:
        self._config, self._watch = config, _Watch(ids)
        self._ws: ClientConnection | None = None
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Subscription:
        try:
            self._ws = self._exit.enter_context(
                connect(
                    self._config.ws_url,
                    additional_headers=self._config.headers,
                    open_timeout=self._config.timeout.connect,
                )
            )
        except (OSError, WebSocketException) as exc:
            raise _connect_error(exc, self._config.ws_url) from exc
        self.add(self._watch.first)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._exit.close()

    def add(self, ids: Iterable[str]) -> None:
        """Subscribe to more jobs, also while iterating."""
        message = self._watch.subscribe(ids)
        if message is not None:
            self._send(message)

    def __iter__(self) -> Iterator[JobEvent]:
        while not self._watch.finished:
            yield self._watch.read(self._recv())

    def _connection(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("use it in a block: with client.subscribe(...) as sub")
        return self._ws

    def _send(self, message: str) -> None:
        try:
            self._connection().send(message)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc

    def _recv(self) -> str | bytes:
        try:
            return self._connection().recv()
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc


class AsyncSubscription:
    """``async with client.subscribe(ids) as sub: async for event in sub: ...``."""

    def __init__(self, config: Config, ids: Iterable[str] | None) -> None:
        self._config, self._watch = config, _Watch(ids)
        self._ws: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncSubscription:
        try:
            self._ws = await async_connect(
                self._config.ws_url,
                additional_headers=self._config.headers,
                open_timeout=self._config.timeout.connect,
            )
        except (OSError, WebSocketException) as exc:
            raise _connect_error(exc, self._config.ws_url) from exc
        await self.add(self._watch.first)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def add(self, ids: Iterable[str]) -> None:
        """Subscribe to more jobs, also while iterating."""
        message = self._watch.subscribe(ids)
        if message is not None:
            await self._send(message)

    async def __aiter__(self) -> AsyncIterator[JobEvent]:
        while not self._watch.finished:
            yield self._watch.read(await self._recv())

    def _connection(self) -> AsyncConnection:
        if self._ws is None:
            raise RuntimeError("use it in a block: async with client.subscribe(...) as sub")
        return self._ws

    async def _send(self, message: str) -> None:
        try:
            await self._connection().send(message)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc

    async def _recv(self) -> str | bytes:
        try:
            return await self._connection().recv()
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
