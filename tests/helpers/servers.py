"""Private PostgreSQL, Redis and NATS servers for the tests that stop, restart, kill or pause a
server, and a read-only look at the shared ones.

A test that needs to take a server down must never do it to the servers on the default ports:
they are the user's (a Redis there may hold a user's keys; another client may be connected to
that NATS). :class:`PrivateServer` starts an instance of its own on a free port of 127.0.0.1 in
a temporary directory, as a child of this interpreter, and signals only that child's pid:
stop (the server's clean shutdown signal), kill (SIGKILL), pause and resume (SIGSTOP/SIGCONT),
restart (same port and data directory, so clients reconnect to the same URL and find what was
stored). The binaries are looked up on PATH, then where Debian installs them
(``/usr/sbin/nats-server``, ``/usr/lib/postgresql/<version>/bin``); a missing one raises
:class:`MissingBinary`, which the fixtures in ``tests/conftest.py`` turn into a skip (a failure
under ``CI=true``).

:func:`shared_identities` reads who the shared servers are (Redis ``run_id``, NATS
``server_id``, PostgreSQL's postmaster start time) without writing anything, so the suite can
check at its end that it restarted none of them.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from tests.helpers.processes import SERVERS, free_port, wait_until

__all__ = [
    "MissingBinary",
    "NatsServer",
    "PostgresServer",
    "PrivateServer",
    "RedisServer",
    "shared_identities",
]

_LIVE: set[PrivateServer] = set()  # stopped at exit if a session ends without its teardown


class MissingBinary(RuntimeError):
    """A server's program is not installed here (the message names it and where it looked)."""


def _binary(name: str, *places: str) -> str:
    found = shutil.which(name) or next((p for p in places if os.access(p, os.X_OK)), None)
    if found is None:
        where = ", ".join(("PATH", *places))
        raise MissingBinary(f"{name} is not installed (looked on {where})")
    return found


def _postgres_bin(name: str) -> str:
    """``name`` from the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off
    PATH), else from PATH."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    return _binary(name, *(f"{v}/{name}" for v in versions))


def _version_key(path: str) -> tuple[int, ...]:
    digits = Path(path).parent.name.split(".")
    return tuple(int(d) for d in digits if d.isdigit())


class PrivateServer(ABC):
    """One server process of this test session, in a directory and on a port of its own."""

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"genspool-{self.name}-"))
        self.port = free_port()
        self.log = self.root / "server.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL a genspool backend connects to (add the namespace parameter)."""

    @abstractmethod
    def argv(self) -> list[str]: ...

    @abstractmethod
    def ready(self) -> bool:
        """Whether the server answers on its port now."""

    def prepare(self) -> None:  # noqa: B027 (a hook: most servers need nothing)
        """Work done once before the first start (PostgreSQL creates its cluster)."""

    def popen_user(self) -> str | None:
        return None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"the private {self.name} server is not running"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        assert not self.running, f"the private {self.name} server is already running"
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                user=self.popen_user(),
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not it
            )
        self.paused = False
        _LIVE.add(self)
        try:
            wait_until(self._up_or_exited, timeout, what=f"the private {self.name} server")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None
        assert self.running, f"the private {self.name} server exited\n{self.log_tail()}"

    def _up_or_exited(self) -> bool:
        return not self.running or self.ready()

    def stop(self, sig: signal.Signals | None = None, timeout: float = 30.0) -> None:
        """Signal this server's pid (its clean shutdown unless ``sig``) and reap it; SIGKILL
        if it is still there after ``timeout`` s."""
        if self.popen is None:
            return
        popen, self.popen = self.popen, None
        if popen.poll() is None:
            popen.send_signal(sig or self.stop_signal)
            if self.paused:
                popen.send_signal(signal.SIGCONT)  # a stopped process acts on nothing else
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
        self.paused = False

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def ensure_running(self) -> None:
        """Hand the server on as the next test expects it: running and answering."""
        if self.paused and self.running:
            self.resume()
        if not self.running:
            self.start()

    def close(self) -> None:
        self.stop()
        _LIVE.discard(self)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log} (tail) ---\n{text[-chars:]}"


class PostgresServer(PrivateServer):
    """``postgres`` on a cluster made by ``initdb`` (trust auth, user ``postgres``), listening on
    127.0.0.1 and on a unix socket in its own directory. Run as the ``postgres`` user when this
    process is root (PostgreSQL refuses to run as root). The programs come from ``bindir`` when
    given (a PostgreSQL bundled in a Python package), else from Debian's install."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: SIGTERM would wait for every client to leave

    def __init__(self, bindir: Path | None = None) -> None:
        find = _postgres_bin if bindir is None else lambda name: str(bindir / name)
        self.postgres, self.initdb, self.isready = map(find, ("postgres", "initdb", "pg_isready"))
        super().__init__()
        if os.geteuid() == 0:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except LookupError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise MissingBinary("running as root, and no 'postgres' user to run it") from None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def popen_user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def prepare(self) -> None:
        command = [self.initdb, "-D", str(self.root / "data"), "-U", "postgres"]
        command += ["--auth=trust", "--no-sync", "-E", "UTF8"]
        done = subprocess.run(
            command, cwd=self.root, user=self.popen_user(), capture_output=True, timeout=120
        )
        assert done.returncode == 0, f"initdb failed: {done.stdout!r} {done.stderr!r}"

    def argv(self) -> list[str]:
        data, sockets = self.root / "data", self.root
        return [
            self.postgres, "-D", str(data), "-p", str(self.port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        ]  # fmt: skip

    def ready(self) -> bool:
        command = [self.isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(command, timeout=10).returncode == 0


class RedisServer(PrivateServer):
    """``redis-server`` keeping nothing on disk, as the shared one on this machine kind."""

    name = "redis"

    def __init__(self) -> None:
        self.binary = _binary("redis-server", "/usr/bin/redis-server")
        super().__init__()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.root),
        ]  # fmt: skip

    def ready(self) -> bool:
        return _ask(self.port, b"PING\r\n").startswith(b"+PONG")


class NatsServer(PrivateServer):
    """``nats-server`` with JetStream file storage in its own directory (kept across a
    restart, as the shared one's)."""

    name = "nats"

    def __init__(self) -> None:
        self.binary = _binary("nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server")
        super().__init__()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        store = str(self.root / "jetstream")
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", store]

    def ready(self) -> bool:
        return _ask(self.port, None).startswith(b"INFO ")


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.close()


# -- the shared servers, read only ---------------------------------------------------------------


def _ask(port: int, request: bytes | None, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """Send ``request`` (if any) and return the first reply bytes; b"" if nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if request is not None:
                s.sendall(request)
            return _read_reply(s)
    except OSError:
        return b""


def _read_reply(s: socket.socket) -> bytes:
    """One reply: a line, or a RESP bulk string read to its end (after an AUTH's ``+OK``)."""
    data = s.recv(65536)
    while data.startswith(b"+OK\r\n"):
        data = data[5:] or s.recv(65536)
    if data.startswith(b"$"):
        size = int(data[1 : data.index(b"\r\n")])
        while len(data) < size + len(str(size)) + 5:
            more = s.recv(65536)
            if not more:
                break
            data += more
    return data


def _resp(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for w in words:
        raw = w.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def redis_identity(url: str) -> str:
    """``run_id`` and ``process_id`` of ``INFO server`` (a new run_id at every start)."""
    parts = urlsplit(url)
    request = b""
    if parts.password:
        user = unquote(parts.username or "default")
        request = _resp("AUTH", user, unquote(parts.password))
    reply = _ask(parts.port or 6379, request + _resp("INFO", "server"), parts.hostname or "")
    fields = dict(
        line.split(":", 1) for line in reply.decode(errors="replace").splitlines() if ":" in line
    )
    if "run_id" not in fields:
        return f"unreachable ({reply[:80]!r})"
    return f"run_id={fields['run_id'].strip()} pid={fields.get('process_id', '?').strip()}"


def nats_identity(url: str) -> str:
    """``server_id`` of the INFO line a NATS server sends on connect (new at every start); the
    connection is closed before any CONNECT, so the server sees no client."""
    parts = urlsplit(url.split(",")[0])
    reply = _ask(parts.port or 4222, None, parts.hostname or "")
    if not reply.startswith(b"INFO "):
        return f"unreachable ({reply[:80]!r})"
    info = json.loads(reply[5:].split(b"\r\n", 1)[0])
    return f"server_id={info.get('server_id')}"


def postgres_identity(url: str) -> str:
    """``pg_postmaster_start_time()`` in one read-only query."""
    try:
        import psycopg
    except ImportError:
        return "unknown (psycopg is not installed)"
    base = url.split("?", 1)[0]
    try:
        with psycopg.connect(base, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()
    except psycopg.Error as exc:
        return f"unreachable ({str(exc).splitlines()[0][:80]})"
    return f"started {row[0] if row else '?'}"


def shared_identities() -> dict[str, str]:
    """Who each shared server is now (or why it could not be read): equal before and after a
    session if the session restarted none of them."""
    return {
        "postgres": postgres_identity(SERVERS["postgres"]),
        "redis": redis_identity(SERVERS["redis"]),
        "nats": nats_identity(SERVERS["nats"]),
    }
