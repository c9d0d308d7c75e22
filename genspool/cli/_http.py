"""The HTTP/1.1 protocol the API is served with: uvicorn's, with a request's head bounded.

uvicorn's httptools protocol keeps no limit on a request's head: the URL and the headers grow
as they arrive, before any route or key is checked (10 connections each sending an unfinished
32 MB header took the API from ~60 MB to ~430 MB). :class:`BoundedHttpTools` answers
``431 Request Header Fields Too Large`` and closes once a head passes ``max_head_bytes`` or
``max_headers`` headers. (uvicorn's h11 protocol, used only without httptools, is bounded by
``h11_max_incomplete_event_size``, which ``genspool serve`` sets to the same size.)
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpTools", "protocol"]


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over the class's bounds."""

    max_head_bytes = 64 * 1024
    max_headers = 100

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head: int | None = 0  # bytes of the current head so far; None past its end
        self._headers = 0
        self._too_many = False

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

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.max_headers:
            # Raised inside the parser: uvicorn answers with send_400_response, which says 431.
            self._too_many = True
            raise ValueError("too many headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._too_many:
            return super().send_400_response(msg)
        self._refuse(f"the request has more than {self.max_headers} headers")

    def _refuse(self, why: str) -> None:
        self.logger.warning("refused a request from %s: %s", _peer(self.client), why)
        message = f"{why} (GENSPOOL_MAX_HEAD_BYTES, GENSPOOL_MAX_HEADERS); send less"
        error = {"message": message, "type": "invalid_request_error", "param": None}
        body = json.dumps({"error": {**error, "code": "request_header_fields_too_large"}})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n{body}".encode()
        )
        self.transport.close()
        self._head = None


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def protocol(max_head_bytes: int, max_headers: int) -> type[BoundedHttpTools]:
    """The ``http`` of a ``uvicorn.Config``: :class:`BoundedHttpTools` with these bounds."""
    bounds = {"max_head_bytes": max_head_bytes, "max_headers": max_headers}
    return type("BoundedHttpTools", (BoundedHttpTools,), bounds)
