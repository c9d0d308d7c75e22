"""The HTTP client under the OpenAI-compatible provider: one small interface, two clients.

:class:`AiohttpWire` when ``aiohttp`` is installed (the ``remote`` extra), else
:class:`HttpxWire`. Measured against an instant upstream on this project's 2-core machine, one
chat call cost ~0.1 ms of CPU through aiohttp and 0.6–1.5 ms through httpx 0.28: httpcore checks
every pooled connection (a ``poll()`` of each idle socket) twice a request, so its cost grows
with the pool, and builds its request and response objects in pure Python. Both clients keep
connections alive, speak HTTP/1.1 and read SSE line by line; a given httpx transport (tests,
proxies) picks httpx.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

__all__ = ["AiohttpWire", "HttpxWire", "Reply", "Wire", "wire"]

#: Most connections held to one upstream: the batch's requests are all in flight at once.
MAX_CONNECTIONS = 256
JSON = "application/json"
#: Longest SSE line read (a chunk carrying a large tool call's arguments).
MAX_LINE = 2**20


@dataclass(slots=True)
class Reply:
    """An answer's head, and its body as lines (a stream) or whole."""

    status: int
    content_type: str
    retry_after: str | None
    lines: AsyncIterator[bytes]
    _read: Any

    async def read(self) -> bytes:
        data: bytes = await self._read()
        return data


class Wire(Protocol):
    base_url: str
    #: What a call may raise: a timeout, or any other failure to get an answer.
    timeouts: tuple[type[BaseException], ...]
    errors: tuple[type[BaseException], ...]

    def post(
        self, path: str, body: bytes, content_type: str = JSON
    ) -> AbstractAsyncContextManager[Reply]: ...

    async def aclose(self) -> None: ...


def wire(
    base_url: str,
    headers: dict[str, str],
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Wire:
    if transport is None:
        try:
            return AiohttpWire(base_url, headers, timeout_s)
        except ImportError:
            pass
    return HttpxWire(base_url, headers, timeout_s, transport)


class HttpxWire:
    timeouts: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        # Keep as many idle connections as may be busy: closing and reopening them under a
        # burst costs more than holding them.
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={**headers, "Content-Type": JSON},
            timeout=timeout_s,
            transport=transport,
            limits=limits,
            trust_env=False,
        )

    @asynccontextmanager
    async def post(self, path: str, body: bytes, content_type: str = JSON) -> AsyncIterator[Reply]:
        typed = {"Content-Type": content_type} if content_type != JSON else None
        request = self._client.build_request("POST", path, content=body, headers=typed)
        response = await self._client.send(request, stream=True)
        try:
            headers = response.headers
            yield Reply(
                response.status_code,
                headers.get("content-type", ""),
                headers.get("retry-after"),
                _lines(response.aiter_lines()),
                response.aread,
            )
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


async def _lines(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line.encode()


class AiohttpWire:
    timeouts: tuple[type[BaseException], ...]
    errors: tuple[type[BaseException], ...]

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        import aiohttp

        self.base_url = base_url
        self.timeouts = (asyncio.TimeoutError,)
        self.errors = (aiohttp.ClientError, ValueError)  # ValueError: an SSE line too long
        self._aiohttp = aiohttp
        self._headers = {**headers, "Content-Type": JSON}
        # Like httpx's timeout: to connect, and between two reads (a stream may run long).
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> Any:
        # A session belongs to the loop it was made in: made at the first call, not when the
        # model is configured (which may be outside any loop).
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                read_bufsize=MAX_LINE,
                max_line_size=MAX_LINE,
                max_field_size=MAX_LINE,
            )
            self._loop = loop
        return self._session

    @asynccontextmanager
    async def post(self, path: str, body: bytes, content_type: str = JSON) -> AsyncIterator[Reply]:
        # A request's own header replaces the session's of the same name (a form's type).
        typed = {"Content-Type": content_type} if content_type != JSON else None
        session = self._open()
        async with session.post(self.base_url + path, data=body, headers=typed) as response:
            headers = response.headers
            yield Reply(
                response.status,
                headers.get("Content-Type", ""),
                headers.get("Retry-After"),
                response.content.__aiter__(),
                response.read,
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
