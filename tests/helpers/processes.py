"""Real genspool processes on loopback, for the tests whose point is a process boundary.

:class:`Spawner` starts ``genspool`` commands as subprocesses of this interpreter, each with
its stdout/stderr captured to a file, and stops them with SIGTERM (SIGKILL after a timeout);
:class:`Server` speaks the public HTTP API to one of them, thinly; :func:`fresh_target` gives a
deployment of several processes a backend namespace of its own. The fixtures that hand these
out live in ``tests/conftest.py``; the stderr of every process still registered in
:data:`LIVE` goes into the report of a failing test.

Nothing here knows about particular tests: models are written from plain dicts, environment
variables are passed through, and the HTTP helpers only speak the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from genspool.backends import open_storage

__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "FAST_LEASES",
    "LIVE",
    "SERVERS",
    "TERMINAL",
    "Proc",
    "Server",
    "Spawner",
    "Target",
    "child_env",
    "free_port",
    "fresh_target",
    "namespaced_url",
    "read_db",
    "sqlite_url",
    "wait_until",
    "ws_until_terminal",
]

T = TypeVar("T")

#: The ``genspool`` command, run by this interpreter (so the venv and the editable install).
GENSPOOL = [sys.executable, "-c", "from genspool.cli import main; main()"]
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

LIVE: list[Proc] = []  # processes whose logs go into the report of a failing test


#: The servers this machine kind runs on loopback; change them with these variables.
SERVERS = {
    "postgres": os.environ.get(
        "GENSPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "redis": os.environ.get("GENSPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("GENSPOOL_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}
NAMESPACE_PARAM = {"postgres": "schema", "redis": "prefix", "nats": "prefix"}


def namespaced_url(kind: str, root: Path) -> str:
    """A backend URL whose data no other test sees (a SQLite file under ``root``, a PostgreSQL
    schema, a Redis key prefix, NATS streams and buckets, a named in-memory store)."""
    if kind == "memory":
        return f"memory://gs{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        return f"sqlite:///{root}/{uuid.uuid4().hex[:8]}.db"
    name = f"gs_{uuid.uuid4().hex[:10]}"
    return f"{SERVERS[kind]}?{NAMESPACE_PARAM[kind]}={name}"


#: Short leases and retries, so that a killed worker's jobs come back within seconds.
FAST_LEASES = {
    "GENSPOOL_LEASE_S": "2", "GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.2"
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """Where a deployment of several processes keeps its jobs: a store URL, and the queue's
    when it differs (a split deployment)."""

    url: str
    queue_url: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """What every process of the deployment is started with."""
        return FAST_LEASES | ({"GENSPOOL_QUEUE_URL": self.queue_url} if self.queue_url else {})


def fresh_target(kind: str, namespaced: Callable[[str], str], spawner: Spawner) -> Iterator[Target]:
    """For a fixture to ``yield from``: a fresh namespace on the backend ``kind`` (``a+b``: the
    queue on ``a``, the store on ``b``). The test skips (fails in CI) if a server is down. The
    namespace is dropped once ``spawner``'s processes are stopped, not while workers use it."""
    queue, _, store = kind.rpartition("+")
    target = Target(namespaced(store), namespaced(queue) if queue else None)
    try:
        asyncio.run(_on_backend(target, drop=False))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"backend unavailable for {kind}: {exc}")
    yield target
    spawner.close()
    asyncio.run(_on_backend(target, drop=True))


async def _on_backend(target: Target, *, drop: bool) -> None:
    """Connect to the target (which makes its schema), and drop it if ``drop``."""
    storage = open_storage(target.url, queue_url=target.queue_url)
    await storage.connect()
    try:
        if drop:
            await storage.drop()
    finally:
        await storage.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without GENSPOOL_* and terminal-size variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENSPOOL_") and k not in {"COLUMNS", "LINES"}
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def ws_until_terminal(ws: Any, ids: set[str], timeout: float = 15.0) -> list[dict[str, Any]]:
    """Receive WebSocket events (a ``websockets`` sync client) until each of ``ids`` had its
    terminal event."""
    events: list[dict[str, Any]] = []
    left = set(ids)
    deadline = time.monotonic() + timeout
    while left:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no terminal event for {left} within {timeout} s; got {events}"
        event = json.loads(ws.recv(timeout=remaining))
        events.append(event)
        if event.get("status") in TERMINAL and "delta" not in event:
            left.discard(event["id"])
    return events


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # an absolute path gives the four-slash form


def read_db(path: Path, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on a genspool SQLite file (while processes write to it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, tuple(args)).fetchall()
    finally:
        db.close()


class Proc:
    """One subprocess with its output in files."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.args = name, args
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        self._files = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            env=env,
            cwd=logdir,
        )
        LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> int:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        return self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        if not self.alive:
            return self.popen.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def close(self) -> None:
        self.stop()
        for f in self._files:
            f.close()
        with contextlib.suppress(ValueError):
            LIVE.remove(self)

    def report(self, tail: int = 6000) -> str:
        state = "running" if self.alive else f"exited {self.popen.returncode}"
        text = self.stderr()
        if len(text) > tail:
            text = "...\n" + text[-tail:]
        return f"$ {' '.join(self.args[3:])}  [{state}]\n{text}"


class Server:
    """A running genspool HTTP process (``serve`` or ``api``) and the file it stores into."""

    def __init__(
        self, proc: Proc, url: str, db: Path | None, config: Path | None, db_url: str
    ) -> None:
        self.proc, self.url, self.db, self.config = proc, url, db, config
        self.db_url = db_url
        self.client = httpx.Client(base_url=url, timeout=30)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/v1/ws"

    def close(self) -> None:
        self.client.close()

    # -- the public API, thinly ------------------------------------------------------------

    def submit(
        self, body: dict[str, Any], *, url: str = CHAT, expect: int | None = 202, **options: Any
    ) -> dict[str, Any]:
        """POST /v1/jobs; checks the status code (unless ``expect`` is None)."""
        response = self.client.post("/v1/jobs", json={"url": url, "body": body, **options})
        if expect is not None:
            assert response.status_code == expect, response.text
        out: dict[str, Any] = response.json()
        return out

    def chat(
        self, model: str, content: str, *, body_extra: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
        """Submit a one-message chat job (``options`` are queue options or ``expect``)."""
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        body.update(body_extra or {})
        return self.submit(body, **options)

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        out: dict[str, Any] = response.json()
        return out

    def wait(
        self, job_id: str, until: Iterable[str] = TERMINAL, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll the job until its status is one of ``until``."""
        wanted = set(until)
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            nonlocal last
            last = self.get(job_id)
            return last if last["status"] in wanted else None

        try:
            return wait_until(reached, timeout, what=f"job {job_id} to be {sorted(wanted)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last}") from None

    def wait_all(
        self, job_ids: Iterable[str], until: Iterable[str] = TERMINAL, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [self.wait(i, until, max(0.1, deadline - time.monotonic())) for i in job_ids]


class Spawner:
    """Starts genspool processes under one directory and stops them all at the end.

    The module's helpers most process tests need are reachable from here too."""

    free_port = staticmethod(free_port)
    wait_until = staticmethod(wait_until)
    read_db = staticmethod(read_db)
    sqlite_url = staticmethod(sqlite_url)
    TERMINAL = TERMINAL

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.servers: list[Server] = []
        self._n = itertools.count(1)

    def models(self, models: list[dict[str, Any]], name: str = "models.yaml") -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
        return path

    def start(self, *args: str, env: dict[str, str] | None = None, name: str | None = None) -> Proc:
        """Start ``genspool <args>`` in the background."""
        label = f"{name or args[0]}-{next(self._n)}"
        proc = Proc(label, [*GENSPOOL, *args], child_env(env), self.root)
        self.procs.append(proc)
        return proc

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``genspool <args>`` to completion (a client command)."""
        return subprocess.run(
            [*GENSPOOL, *args],
            capture_output=True,
            text=True,
            env=child_env(env),
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def server(
        self,
        models: list[dict[str, Any]] | Path | None,
        *,
        command: str = "serve",
        db: Path | None = None,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
        startup_s: float = 30.0,
    ) -> Server:
        """Start ``genspool serve`` (or ``api``) on a free port and wait for ``/healthz``.
        ``models=None`` serves the bundled models (no --config). ``db_url`` (any backend URL)
        replaces the SQLite file ``db``."""
        config = (
            self.models(models, f"models-{next(self._n)}.yaml")
            if isinstance(models, list)
            else models
        )
        if db_url is None:
            db = db or self.root / "g.db"
            db_url = sqlite_url(db)
        port = free_port()
        args = [command, "--host", "127.0.0.1", "--port", str(port), "--db", db_url]
        if config is not None:
            args += ["--config", str(config)]
        proc = self.start(*args, env=env, name=command)
        url = f"http://127.0.0.1:{port}"
        self._wait_healthy(proc, url, startup_s)
        server = Server(proc, url, db, config, db_url)
        self.servers.append(server)
        return server

    def worker(
        self,
        db: Path | str,
        config: Path,
        *,
        env: dict[str, str] | None = None,
        models: Iterable[str] = (),
    ) -> Proc:
        """Start ``genspool worker`` on a SQLite file, or on any backend URL given as a str."""
        url = db if isinstance(db, str) else sqlite_url(db)
        args = ["worker", "--db", url, "--config", str(config)]
        for m in models:
            args += ["--model", m]
        return self.start(*args, env=env, name="worker")

    @staticmethod
    def _wait_healthy(proc: Proc, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not proc.alive:
                raise AssertionError(
                    f"{proc.name} exited {proc.popen.returncode} before "
                    f"answering /healthz:\n{proc.stderr()}{proc.stdout()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(
                    f"{proc.name} did not answer /healthz within {timeout} s:\n{proc.stderr()}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for proc in reversed(self.procs):
            proc.close()
