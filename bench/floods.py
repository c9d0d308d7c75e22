"""Floods against one real ``genspool serve``: push connections and half-sent requests must
neither grow the server without bound nor starve an unrelated request.

    python bench/floods.py [--connections 2000] [--slow-readers 50] [--slowloris 1000]

Starts ``genspool serve`` (SQLite, echo models: named as such, they compute nothing) and runs
four floods one after the other, each for a few seconds:

1. ``sse``: N connections to ``GET /v1/jobs/{id}/events`` of one job, which then ends (every
   stream gets its terminal event);
2. ``ws``: N WebSocket connections, each subscribing to that kind of job;
3. ``slow``: WebSockets that subscribe to jobs with ~200 KB results, over and over, and never
   read (a small receive buffer);
4. ``slowloris``: connections that send a request head one header line every second, never
   finishing it.

Connections open at ``--rate`` a second (default 500; 0 opens them all at once). For each
flood it prints the server's RSS (``/proc/<pid>/status`` VmRSS) and the p99 of an unrelated
``GET /v1/jobs/{id}``, probed by a separate process, before, during and after the flood, as
ratios against the before figures, with the targets beside: RSS growth per slow reader at most
1 MB, unrelated GET p99 at most 50 ms during each flood. The whole run stays under 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import orjson
from _common import RawClient, free_port, healthy, pct

MODELS = """models:
  - {name: echo, provider: echo}
  - name: slow
    provider: echo
    options: {latency_ms: 6000}
    batching: {max_batch_size: 64}
"""
PROBE_EVERY_S = 0.02
RESULT_BYTES = 200_000
TARGET_P99_MS = 50.0
TARGET_MB_PER_READER = 1.0
RATE = 500.0  # new connections a second (--rate; 0: all at once)


# -- the server and its measures ---------------------------------------------------------------


@contextlib.contextmanager
def serve() -> Iterator[tuple[str, int, int]]:
    """``genspool serve`` on a fresh SQLite file: its URL, port and pid."""
    tmp = Path(tempfile.mkdtemp(prefix="genspool-floods-"))
    (tmp / "models.yaml").write_text(MODELS)
    port = free_port()
    args = [sys.executable, "-m", "genspool", "serve", "--port", str(port),
            "--config", str(tmp / "models.yaml"), "--db", f"sqlite:///{tmp / 'g.db'}"]  # fmt: skip
    env = {**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not healthy(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("genspool serve did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", port, server.pid
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _probe_main(
    port: int, path: str, seconds: float, out: multiprocessing.connection.Connection
) -> None:  # type: ignore[name-defined]
    async def run() -> list[float]:
        client, took = RawClient("127.0.0.1", port), []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(client.request("GET", path), 30)
            except (OSError, TimeoutError, ValueError, IndexError):
                client = RawClient("127.0.0.1", port)
            took.append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_EVERY_S)
        return took

    out.send(asyncio.run(run()))


class Probe:
    """Unrelated GETs from a process of their own (so the flood's client does not delay them)."""

    def __init__(self, port: int, path: str, seconds: float) -> None:
        self.receiving, sending = multiprocessing.Pipe(duplex=False)
        self.proc = multiprocessing.Process(
            target=_probe_main, args=(port, path, seconds, sending), daemon=True
        )
        self.proc.start()

    async def p99(self) -> float:
        took: list[float] = await asyncio.to_thread(self.receiving.recv)
        self.proc.join()
        return pct(took, 0.99) if took else float("nan")


# -- clients -------------------------------------------------------------------------------------


async def sse_client(port: int, job_id: str, results: Counter[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status = (await reader.readline()).split(b" ")[1:2]
        results[status[0].decode() if status else "reset"] += 1
        while await reader.read(65536):
            pass
    finally:
        writer.close()


def ws_frame(text: bytes) -> bytes:
    """One masked client text frame (RFC 6455); the mask is zeros, which is allowed."""
    head = b"\x81" + (
        bytes([0x80 | len(text)]) if len(text) < 126 else b"\xfe" + struct.pack("!H", len(text))
    )
    return head + b"\x00\x00\x00\x00" + text


async def ws_open(
    port: int, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if rcvbuf:
        import socket

        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    if b" 101 " not in status:
        writer.close()
        return None
    return reader, writer


async def ws_client(port: int, job_id: str, results: Counter[str]) -> None:
    opened = await ws_open(port)
    if opened is None:
        results["refused"] += 1
        return
    reader, writer = opened
    results["open"] += 1
    try:
        writer.write(ws_frame(orjson.dumps({"subscribe": [job_id]})))
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def slow_reader(
    port: int, ids: list[str], results: Counter[str], stop: asyncio.Event
) -> None:
    opened = await ws_open(port, rcvbuf=1 << 14)
    if opened is None:
        results["refused"] += 1
        return
    writer = opened[1]
    results["open"] += 1
    try:
        for _ in range(5):
            for job_id in ids:
                writer.write(ws_frame(orjson.dumps({"subscribe": [job_id]})))
            await asyncio.sleep(0.2)
        await stop.wait()  # never reads
    except OSError:
        results["closed by server"] += 1
    finally:
        writer.transport.abort()


async def slowloris(port: int, results: Counter[str], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        for i in range(10_000):
            if stop.is_set():
                results["open at the end"] += 1
                return
            writer.write(f"X-Slow-{i}: a\r\n".encode())
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    results["closed by server"] += 1
                    return
                results["answered"] += 1
                return
    except OSError:
        results["closed by server"] += 1
    finally:
        writer.transport.abort()


# -- the floods ------------------------------------------------------------------------------------


async def submit(url: str, model: str, content: str, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        made = [
            await http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
            for _ in range(n)
        ]
        return [r.json()["id"] for r in made]


async def wait_done(url: str, ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for job_id in ids:
            while (await http.get(f"/v1/jobs/{job_id}")).json()["status"] not in {
                "succeeded",
                "failed",
            }:
                await asyncio.sleep(0.1)


async def flood(
    name: str,
    pid: int,
    port: int,
    probe_path: str,
    start: Callable[[asyncio.Event], Awaitable[Counter[str]]],
    seconds: float,
) -> dict[str, object]:
    before_p = Probe(port, probe_path, 2.0)
    rss_before = rss_mb(pid)
    p99_before = await before_p.p99()
    stop = asyncio.Event()
    during_p = Probe(port, probe_path, seconds)
    task = asyncio.create_task(start(stop))
    peak = rss_before
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.2)
    p99_during = await during_p.p99()
    stop.set()
    outcome = await task
    await asyncio.sleep(1.0)
    after_p = Probe(port, probe_path, 2.0)
    p99_after = await after_p.p99()
    return {
        "name": name,
        "rss": (rss_before, peak, rss_mb(pid)),
        "p99": (p99_before, p99_during, p99_after),
        "outcome": dict(outcome),
    }


async def gather_until(
    stop: asyncio.Event, coros: list[Awaitable[None]], results: Counter[str]
) -> Counter[str]:
    tasks = []
    for i, c in enumerate(coros):  # opened at ``RATE`` a second, in steps of 10
        tasks.append(asyncio.ensure_future(c))
        if RATE and i % 10 == 9:
            await asyncio.sleep(10 / RATE)
    await stop.wait()
    await asyncio.wait(tasks, timeout=3)  # those that watch ``stop`` count themselves
    for t in tasks:
        t.cancel()
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(r, OSError):
            results["error: " + type(r).__name__] += 1
    return results


async def main(args: argparse.Namespace) -> None:
    with serve() as (url, port, pid):
        probe_job = (await submit(url, "echo", "probe", 1))[0]
        probe = f"/v1/jobs/{probe_job}"
        n = args.connections
        reports = []

        async def sse(stop: asyncio.Event) -> Counter[str]:
            results: Counter[str] = Counter()
            job = (await submit(url, "slow", "one job, many listeners", 1))[0]
            return await gather_until(
                stop, [sse_client(port, job, results) for _ in range(n)], results
            )

        async def ws(stop: asyncio.Event) -> Counter[str]:
            results: Counter[str] = Counter()
            jobs = await submit(url, "slow", "watched", 20)
            clients = [ws_client(port, jobs[i % len(jobs)], results) for i in range(n)]
            return await gather_until(stop, clients, results)

        big = await submit(url, "echo", "x" * RESULT_BYTES, 8)
        await wait_done(url, big)

        async def slow(stop: asyncio.Event) -> Counter[str]:
            results: Counter[str] = Counter()
            clients = [slow_reader(port, big, results, stop) for _ in range(args.slow_readers)]
            return await gather_until(stop, clients, results)

        async def loris(stop: asyncio.Event) -> Counter[str]:
            results: Counter[str] = Counter()
            clients = [slowloris(port, results, stop) for _ in range(args.slowloris)]
            return await gather_until(stop, clients, results)

        floods = (
            ("sse", sse, 10.0),
            ("ws", ws, 10.0),
            ("slow", slow, 6.0),
            ("slowloris", loris, 12.0),
        )
        for name, start, seconds in (f for f in floods if f[0] in args.floods):
            reports.append(await flood(name, pid, port, probe, start, seconds))
            print_report(reports[-1], args)


def print_report(r: dict[str, object], args: argparse.Namespace) -> None:
    (rb, rd, ra), (pb, pd, pa) = r["rss"], r["p99"]  # type: ignore[misc]
    ok = "ok" if pd <= TARGET_P99_MS else "MISSED"
    print(f"\n== {r['name']} flood: {r['outcome']}")
    print(
        f"  RSS MB      before {rb:7.1f}  peak during {rd:7.1f} (+{rd - rb:6.1f})"
        f"  after {ra:7.1f} (+{ra - rb:6.1f})"
    )
    print(
        f"  GET p99 ms  before {pb:7.1f}  during {pd:7.1f} ({pd / pb:5.1f}x)"
        f"  after {pa:7.1f} ({pa / pb:5.1f}x)   target during <= {TARGET_P99_MS:.0f} ms: {ok}"
    )
    if r["name"] == "slow":
        per = (rd - rb) / max(1, args.slow_readers)
        ok = "ok" if per <= TARGET_MB_PER_READER else "MISSED"
        print(
            f"  RSS growth per slow reader {per:.2f} MB   target <= {TARGET_MB_PER_READER} MB: {ok}"
        )


def raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--slow-readers", type=int, default=50)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=RATE, help="connections opened a second")
    parser.add_argument(
        "--floods", default="sse,ws,slow,slowloris", help="which floods, comma-separated"
    )
    parsed = parser.parse_args()
    RATE = parsed.rate
    limit = raise_open_files(2 * parsed.connections + 500)
    print(f"open files (ulimit -n, soft): {limit}; the server inherits it")
    print(f"connections opened {RATE:.0f} a second" if RATE else "connections opened at once")
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(main(parsed), 170))
    print(f"\ntook {time.monotonic() - started:.0f} s")
