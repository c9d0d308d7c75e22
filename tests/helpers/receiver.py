"""A webhook receiver on loopback for tests: a real TCP server speaking just enough HTTP/1.1,
that records what it is sent and answers a status of the test's choosing. Before
:meth:`Receiver.start` (or after :meth:`Receiver.stop`) its port refuses connections: a
receiver that is down."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    status: int = 200
    port: int = field(default_factory=lambda: _free_port())
    got: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.got.append(Delivery(headers, body))
        self.arrived.set()
        reply = f"HTTP/1.1 {self.status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
        writer.write(reply.encode())
        await writer.drain()
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
