"""The moving parts of ``bench/fanout.py``: the fault server and its control, ``genspool
serve``, the peers' venvs, worker and client processes, genspool's client (POST, then SSE) and
the direct clients of the map's baseline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
import httpx
import orjson
from _common import free_port, healthy

PEERS_DIR = Path(__file__).parent / "peers"
VENVS = Path.home() / ".cache" / "genspool-bench"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


# -- peers' venvs --------------------------------------------------------------------------------


def ensure_venv(name: str, packages: list[str]) -> Path:
    """``~/.cache/genspool-bench/<name>`` with ``packages`` (pip, on first use); its python."""
    venv = VENVS / name
    marker = venv / ".bench-installed"
    wanted = " ".join(packages)
    if marker.exists() and marker.read_text().strip() == wanted:
        return venv / "bin" / "python"
    print(f"setting up {venv}: pip install {wanted}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages]
    subprocess.run(pip, check=True)
    marker.write_text(wanted + "\n")
    return venv / "bin" / "python"


# -- the fault server ----------------------------------------------------------------------------


@contextmanager
def fault_server() -> Iterator[str]:
    """``python -m genspool.testing.faults`` in its own process (so that its event loop has
    a core to itself, not this process's GIL); its root URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "genspool.testing.faults", "--port", "0"], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().decode().strip()
    finally:
        proc.terminate()
        proc.wait(10)


class FaultControl:
    """The fault server's ``/_faults`` routes, from the harness."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def ready(self, rules: list[dict[str, Any]]) -> None:
        """Idle, counts cleared, ``rules`` set (a reset clears them too)."""
        self._idle(5.0)
        self.http.post("/_faults/reset").raise_for_status()
        self.http.post("/_faults/script", json={"rules": rules}).raise_for_status()

    def stats(self, settle_s: float) -> dict[str, Any]:
        """The counts once nothing is in flight (calls still ending: up to ``settle_s``)."""
        return self._idle(settle_s)

    def _idle(self, within_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            stats: dict[str, Any] = self.http.get("/_faults/stats").json()
            if stats["in_flight"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.01)


# -- genspool ------------------------------------------------------------------------------------


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far. Wall times on a
    shared machine move with its load; what a fan-out costs in CPU does not."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def genspool_serving(models_yaml: str) -> Iterator[tuple[str, int]]:
    """``genspool serve`` on SQLite (``NORMAL``, its default) with ``models_yaml``; its URL
    and pid. Its log goes to a file (a pipe nobody reads would stall it once full)."""
    tmp = Path(tempfile.mkdtemp(prefix="genspool-bench-fanout-"))
    (tmp / "models.yaml").write_text(models_yaml)
    port = free_port()
    with open(tmp / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genspool",
                "serve",
                "--port",
                str(port),
                "--config",
                str(tmp / "models.yaml"),
                "--db",
                f"sqlite:///{tmp / 'g.db'}",
            ],
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"},
        )
    try:
        deadline = time.monotonic() + 60
        while not healthy(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"genspool serve did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.1)
        print(f"genspool serve pid {server.pid}, log {tmp / 'serve.log'}", flush=True)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(30)


def fanout_body(models: list[str], strategy: str, tag: str, items: int, reducer: str) -> bytes:
    if strategy == "map":
        user = "{{item}}"
        body = {"model": models[0], "messages": [{"role": "user", "content": user}], "user": user}
        return orjson.dumps(
            {
                "map": {"items": [f"{tag}{i}" for i in range(items)], "body": body},
                "reduce": {
                    "body": {
                        "model": reducer,
                        "user": f"reduce-{tag}",
                        "messages": [{"role": "user", "content": "{{outputs}}"}],
                    }
                },
                "deadline_s": 600,
            }
        )
    branches = [
        {
            "name": m,
            "body": {
                "model": m,
                "user": f"{tag}-{m}",
                "messages": [{"role": "user", "content": f"{tag}-{m}"}],
            },
        }
        for m in models
    ]
    return orjson.dumps({"branches": branches, "aggregate": strategy, "deadline_s": 30})


async def genspool_fanout(
    url: str, models: list[str], strategy: str, tag: str, *, items: int = 0, reducer: str = ""
) -> tuple[float, str, bool, str]:
    """One fan-out as a user waits for it: POST, then the parent's SSE until its terminal
    event. Seconds from the POST's start to that event; what it said; whether it succeeded;
    the parent's id."""
    host, port = url.removeprefix("http://").split(":")
    body = fanout_body(models, strategy, tag, items, reducer)
    started = time.perf_counter()
    status, answer = await _request(host, int(port), "POST", "/v1/fanouts", body)
    if status != 202:
        return time.perf_counter() - started, f"POST {status}: {answer[:200]!r}", False, ""
    job_id = orjson.loads(answer)["id"]
    event = await _until_terminal(host, int(port), job_id)
    seconds = time.perf_counter() - started
    result = (event.get("result") or {}).get("body") or {}
    detail = f"{event['status']}"
    if strategy == "first":
        detail += f" winner {result.get('winner')}"
    elif result:
        detail += f" partial={result.get('partial')}"
    if event.get("error"):
        detail += f" error {event['error']}"
    return seconds, detail, event["status"] == "succeeded", job_id


def timeline(url: str, job_id: str, t0: float) -> dict[str, float]:
    """Milliseconds from ``t0`` (wall clock) to each step of a fan-out, from the jobs' own
    timestamps: the parent stored, leased; its children stored, leased, ended; the parent
    ended. Read after the run, outside its timing."""
    with httpx.Client(base_url=url, timeout=30) as http:
        parent = http.get(f"/v1/jobs/{job_id}").json()
        ids = [b["job_id"] for b in parent["result"]["body"]["branches"]]
        kids = [http.get(f"/v1/jobs/{i}").json() for i in ids]
    stamps = [k["timestamps"] for k in kids]
    ended = [max(v for k, v in s.items() if k not in ("queued", "running")) for s in stamps]
    marks = {
        "parent stored": parent["timestamps"]["queued"],
        "parent leased": parent["timestamps"]["running"],
        "children stored": max(s["queued"] for s in stamps),
        "first child leased": min(s.get("running", float("inf")) for s in stamps),
        "last child leased": max(s.get("running", 0.0) for s in stamps),
        "first child ended": min(ended),
        "last child ended": max(ended),
        "parent ended": parent["timestamps"][parent["status"]],
    }
    return {k: (v - t0) * 1000 for k, v in marks.items()}


async def _request(host: str, port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection (``Connection: close``), its status and body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        status, headers = await _head(reader)
        return status, await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _until_terminal(host: str, port: int, job_id: str) -> dict[str, Any]:
    """Read ``GET /v1/jobs/{id}/events`` (chunked SSE) until a terminal status arrives."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        status, headers = await _head(reader)
        if status != 200:
            raise RuntimeError(f"SSE answered {status}")
        chunked = "chunked" in headers.get("transfer-encoding", "")
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    raise RuntimeError("the SSE stream ended before a terminal event")
                buffer += (await reader.readexactly(size + 2))[:-2]
            else:
                more = await reader.read(65536)
                if not more:
                    raise RuntimeError("the SSE stream ended before a terminal event")
                buffer += more
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        data = orjson.loads(line[5:])
                        if data.get("status") in TERMINAL and "branch" not in data:
                            return dict(data)
    finally:
        writer.close()


# -- the map's direct baseline --------------------------------------------------------------------


async def direct_map(fault_url: str, model: str, prefix: str, n: int, concurrency: int) -> float:
    """``n`` chat calls straight to the fault server from ``concurrency`` aiohttp clients
    (a keep-alive connection each), each sending its next call when the last is answered."""
    queue = iter(range(n))
    url = fault_url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for i in queue:
                user = f"{prefix}{i}"
                body = {
                    "model": model,
                    "user": user,
                    "messages": [{"role": "user", "content": user}],
                }
                async with session.post(url, json=body) as response:
                    response.raise_for_status()
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - started


# -- peers' processes -----------------------------------------------------------------------------


@contextmanager
def celery_worker(python: Path, fault_url: str) -> Iterator[int]:
    """The chord's worker: PEERS.md's settings, but a pool of 8 threads (the 8 calls at once)."""
    cmd = [
        str(python.parent / "celery"),
        "-A",
        "celery_fanout:app",
        "worker",
        "-P",
        "threads",
        "-c",
        "8",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]
    env = {**os.environ, "FAULT_URL": fault_url}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=PEERS_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(3.0)  # it consumes once connected; the client's first calls wait meanwhile
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"celery worker exited: {log.read().decode()[-2000:]}")
            yield proc.pid
        finally:
            proc.terminate()
            proc.wait(30)


class PeerClient:
    """A peer's long-lived client process, driven one fan-out at a time (``_fanout_common``)."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.proc, self.stdin, self.stdout = proc, stdin, stdout
        #: The processes whose CPU a fan-out of this peer costs (its worker's too).
        self.pids = [proc.pid]

    @classmethod
    @contextmanager
    def started(cls, python: Path, script: str, fault: str, models: str) -> Iterator[PeerClient]:
        proc = subprocess.Popen(
            [str(python), script, "--fault", fault, "--models", models],
            cwd=PEERS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            line = proc.stdout.readline()
            if not line.startswith(b'{"ready"'):
                raise SystemExit(f"{script} did not start (exit {proc.wait(10)})")
            yield cls(proc, proc.stdin, proc.stdout)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.terminate()
            proc.wait(30)

    def run(self, strategy: str, tag: str) -> tuple[float, str, bool]:
        self.stdin.write(orjson.dumps({"strategy": strategy, "tag": tag}) + b"\n")
        self.stdin.flush()
        reply = orjson.loads(self.stdout.readline())
        return float(reply["seconds"]), str(reply["detail"]), bool(reply["ok"])
