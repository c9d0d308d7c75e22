"""The HTTP/1.1 protocol the API is served with: uvicorn's, with a request's head bounded.

uvicorn's httptools protocol keeps no limit on a request's head: the URL and the headers grow
as they arrive, before any route or key is checked (10 connections each sending an unfinished
32 MB header took the API from ~60 MB to ~430 MB). :class:`BoundedHttpTools` answers
``431 Request Header Fields Too Large`` and closes once a head passes ``max_head_bytes`` or
``max_headers`` headers. (uvicorn's h11 protocol, used only without httptools, is bounded by
``h11_max_incomplete_event_size``, which ``genspool serve`` sets to the same size.) A head must
also arrive within ``head_timeout_s`` of the connection opening or the request beginning, else
the answer is ``408 Request Timeout`` and the connection closes: uvicorn only times out idle
keep-alive connections, so 1,000 half-sent requests (slowloris) held their sockets for good.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpTools", "protocol"]


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over the class's bounds."""

    max_head_bytes = 64 * 1024
    max_headers = 100
    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head: int | None = 0  # bytes of the current head so far; None past its end
        self._headers = 0
        self._too_many = False
        self._late: asyncio.TimerHandle | None = None
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._late is not None:
            self._late.cancel()
            self._late = None
        super().connection_lost(exc)

    def _time_head(self) -> None:
        if self._late is None:
            self._late = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._late = None
        if not self.transport.is_closing():
            why = f"the request's head did not arrive within {self.head_timeout_s:g} s"
            self._answer(408, "Request Timeout", why, "GENSPOOL_HEAD_TIMEOUT_S", "request_timeout")

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)
        # Counted after parsing, so a chunk that ends the head and starts a body is never
        # refused for the body's bytes; a head grows at most one read (256 KiB) past the bound.
        if self._head is None or self.transport.is_closing():
            return
        self._head += len(data)
        if self._head > self.max_head_bytes:
            self._refuse(f"the request's URL and headers passed {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head, self._headers = 0, 0
        self._time_head()  # from the first byte of a kept-alive connection's next request

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.max_headers:
            # Raised inside the parser: uvicorn answers with send_400_response, which says 431.
            self._too_many = True
            raise ValueError("too many headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head = None
        if self._late is not None:
            self._late.cancel()
            self._late = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._too_many:
            return super().send_400_response(msg)
        self._refuse(f"the request has more than {self.max_headers} headers")

    def _refuse(self, why: str) -> None:
        self._answer(
            431,
            "Request Header Fields Too Large",
            why + "; send less",
            "GENSPOOL_MAX_HEAD_BYTES, GENSPOOL_MAX_HEADERS",
            "request_header_fields_too_large",
        )

    def _answer(self, status: int, phrase: str, why: str, settings: str, code: str) -> None:
        """Answer ``status`` in the OpenAI error shape before any route runs, and close."""
        # A late head is routine (a browser's unused preconnection does it): not a warning.
        level = logging.DEBUG if status == 408 else logging.WARNING
        self.logger.log(level, "refused a request from %s: %s", _peer(self.client), why)
        error = {"message": f"{why} ({settings})", "type": "invalid_request_error", "param": None}
        body = json.dumps({"error": {**error, "code": code}})
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\n".encode()
            + b"content-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n{body}".encode()
        )
        self.transport.close()
        self._head = None
        if self._late is not None:
            self._late.cancel()
            self._late = None


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def protocol(
    max_head_bytes: int, max_headers: int, head_timeout_s: float = 10.0
) -> type[BoundedHttpTools]:
    """The ``http`` of a ``uvicorn.Config``: :class:`BoundedHttpTools` with these bounds."""
    bounds = {
        "max_head_bytes": max_head_bytes,
        "max_headers": max_headers,
        "head_timeout_s": head_timeout_s,
    }
    return type("BoundedHttpTools", (BoundedHttpTools,), bounds)
