"""Read a Server-Sent Events answer of an in-process app as it comes.

httpx's ASGI transport hands back an answer once the app has finished it, and a live stream
does not finish while there is something to follow; :class:`EventStream` calls the ASGI app
itself (a GET with the given cookies and headers), parses the events as they are sent, and
disconnects like a browser leaving the page at the end of the ``async with``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["EventStream"]


class EventStream:
    def __init__(
        self,
        app: Any,
        path: str,
        cookies: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        host: str = "genspool.test",
    ) -> None:
        self.app, self.path, self.cookies, self.host = app, path, dict(cookies), host
        self.extra = dict(headers or {})
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.raw = b""
        self.ended = asyncio.Event()
        self._events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._buffer = b""
        self._gone = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._asked = False

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self.app(self._scope(), self._receive, self._send))
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({started, self._task}, timeout=10, return_when="FIRST_COMPLETED")
        started.cancel()
        if self._task.done():
            self._task.result()  # the app failed before answering: raise its error
        assert self.status is not None, f"no answer to GET {self.path} within 10 s"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gone.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def next(self, name: str | None = None, timeout: float = 10.0) -> tuple[str, str]:
        """The next event (named ``name``, skipping others): (name, data)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._events.get()
                if name is None or event[0] == name:
                    return event

    async def until_end(self, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Every event until the app ends the answer."""
        async with asyncio.timeout(timeout):
            await self.ended.wait()
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    def _scope(self) -> dict[str, Any]:
        parts = urlsplit(self.path)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers = [(b"host", self.host.encode()), (b"accept", b"text/event-stream")]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in self.extra.items()]
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": parts.path, "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(), "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": (self.host, 80),
        }  # fmt: skip

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:  # the request (a GET: no body), then nothing until the page goes
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            self._started.set()
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self.raw += chunk
            self._buffer += chunk
            while b"\n\n" in self._buffer:
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                self._parse(block.decode())
            if not message.get("more_body", False):
                self.ended.set()

    def _parse(self, block: str) -> None:
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data or name != "message":
            self._events.put_nowait((name, "\n".join(data)))
