"""Submit latency: p50/p99 of ``POST /v1/jobs`` at 500 requests/s for 20 s, against
``GET /healthz`` (the same server, the same HTTP stack, no queue write) at the same rate.

    python bench/submit_latency.py [--rate 500] [--seconds 20]

Starts ``genspool serve`` (API and worker in one process, SQLite, the zero-latency ``echo``
model so the worker keeps up) and an open-loop load generator in this process: requests are
sent on a fixed schedule whatever the answers do, so a slow server cannot slow the load.
Target: p99 of the submit at most 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MODELS = "models:\n  - name: echo\n    provider: echo\n    max_batch_size: 64\n"
JOB = {
    "url": "/v1/chat/completions",
    "body": {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def load(
    client: RawClient, method: str, path: str, rate: int, seconds: float
) -> tuple[list[float], int]:
    """Open loop: request i is due at ``i / rate``; its latency counts from when it was due,
    so a server that falls behind is charged for the wait (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    body = json.dumps(JOB).encode() if method == "POST" else None

    async def one(due: float) -> None:
        nonlocal errors
        try:
            status = await client.request(method, path, body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        errors += status >= 400
        latencies.append(time.perf_counter() - due)

    tasks, begin = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        due = begin + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(url: str, rate: int, seconds: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    client = RawClient(host, int(port))
    await load(client, "GET", "/healthz", 100, 1)  # open some connections
    base, base_err = await load(client, "GET", "/healthz", rate, seconds)
    sub, sub_err = await load(client, "POST", "/v1/jobs", rate, seconds)
    client.close()
    for name, lat, err in (("GET /healthz", base, base_err), ("POST /v1/jobs", sub, sub_err)):
        print(
            f"{name:14} n={len(lat):6} errors={err:3}  p50 {pct(lat, 0.5):6.2f} ms  "
            f"p99 {pct(lat, 0.99):6.2f} ms"
        )
    print(
        f"p99 ratio submit/healthz: {pct(sub, 0.99) / pct(base, 0.99):.2f}; "
        f"submit p99 {pct(sub, 0.99):.2f} ms (target <= 25 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="genspool-latency-"))
    (tmp / "models.yaml").write_text(MODELS)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "genspool",
        "serve",
        "--port",
        str(port),
        "--config",
        str(tmp / "models.yaml"),
        "--db",
        f"sqlite:///{tmp}/g.db",
    ]
    server = subprocess.Popen(
        cmd,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(measure(url, args.rate, args.seconds))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
