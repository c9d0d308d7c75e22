"""Helpers shared by the benchmarks: a temporary store, a worker running in-process, a
``genspool serve`` subprocess, a lean HTTP client, medians and percentiles."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from genspool.backends.sqlite import SQLiteBackend
from genspool.config import ModelConfig
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.runtime import ModelRegistry


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@asynccontextmanager
async def running(
    models: Sequence[ModelConfig], synchronous: str = "NORMAL"
) -> AsyncIterator[tuple[Queue, Worker]]:
    """A fresh SQLite store and a worker serving ``models``, both in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        queue = Queue(SQLiteBackend(os.path.join(tmp, "bench.db"), synchronous=synchronous))
        await queue.connect()
        worker = Worker(queue, ModelRegistry(models))
        await worker.start()
        task = asyncio.create_task(worker.run())
        try:
            yield queue, worker
        finally:
            worker.stop()
            await task
            await queue.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, a pool of connections.

    httpx's async client spends ~1 ms of CPU per request, which on two cores made the load
    generator, not the server, the bottleneck at 500 requests/s; this one spends ~50 us."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + (body or b"")
        if self._idle:  # a kept-alive connection the server may have closed meanwhile
            reader, writer = self._idle.pop()
            writer.write(data)
            status_line = await reader.readline()
            if status_line:
                return await self._finish(reader, writer, status_line)
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(data)
        return await self._finish(reader, writer, await reader.readline())

    async def _finish(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status_line: bytes
    ) -> int:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self._idle.append((reader, writer))
        return int(status_line.split()[1])

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


@contextmanager
def serving(models_yaml: str, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """``genspool serve`` on SQLite in a temporary directory, with the given models file:
    yields its URL, once ``/healthz`` answers, and its database file. ``env`` replaces this
    process's environment for the server (default: inherited)."""
    tmp = Path(tempfile.mkdtemp(prefix="genspool-bench-"))
    (tmp / "models.yaml").write_text(models_yaml)
    port, db = free_port(), tmp / "g.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "genspool", "serve", "--port", str(port),
         "--config", str(tmp / "models.yaml"), "--db", f"sqlite:///{db}"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**(os.environ if env is None else env), "GENSPOOL_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not healthy(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"genspool serve did not start: {server.stderr}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", db
    finally:
        server.terminate()
        server.wait(30)


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
