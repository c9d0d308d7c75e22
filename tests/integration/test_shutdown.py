"""Ctrl-C on ``genspool serve`` with push clients connected: a real process on SQLite, real
SSE and WebSocket clients over loopback, real signals.

The first SIGINT must stop leasing at once, end every push stream (a WebSocket close frame
1001 with a reason, an SSE comment line), let in-flight jobs finish or hand them back within
``GENSPOOL_DRAIN_TIMEOUT_S``, and exit 0 within that bound plus a few seconds; a second SIGINT
exits at once (status 130). Either way, no accepted job is lost: a server started again on the
same file brings every one of them to an end.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers.processes import TERMINAL, Server, Spawner

DRAIN_S = 4.0
#: What the README promises beyond the drain timeout ("plus a few seconds").
SLACK_S = 3.0
SLOW = {
    "name": "slow",
    "provider": "echo",
    "options": {"latency_ms": 1500},
    "batching": {"max_batch_size": 2, "max_concurrency": 1},
}
STUCK = {
    "name": "stuck",
    "provider": "echo",
    "options": {"latency_ms": 60_000},
    "limits": {"timeout_s": 120},
    "batching": {"max_batch_size": 2, "max_concurrency": 1},
}
#: The same model names, answering at once: the server started again after the stop.
FAST = [
    {"name": "echo", "provider": "echo"},
    {"name": "slow", "provider": "echo"},
    {"name": "stuck", "provider": "echo"},
]
SSE_COMMENT = ": genspool is shutting down"


def chat(server: Server, model: str, text: str) -> str:
    job_id: str = server.chat(model, text)["id"]
    return job_id


class SSEClient(threading.Thread):
    """Reads one job's event stream to its end, keeping every line."""

    def __init__(self, url: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.job_id = url, job_id
        self.lines: list[str] = []
        self.opened = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}/v1/jobs/{self.job_id}/events", timeout=60) as r:
                self.opened.set()
                self.lines.extend(r.iter_lines())
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            self.opened.set()

    def ended_cleanly(self) -> bool:
        """The stream ended with the job's terminal event or the shutdown comment."""
        last = [line for line in self.lines if line][-1:]
        if not last:
            return False
        if last[0].startswith(SSE_COMMENT):
            return True
        event = json.loads(last[0].removeprefix("data: "))
        return bool(event["status"] in TERMINAL)


def ws_clients(
    stack: contextlib.ExitStack, server: Server, ids: list[str], n: int
) -> list[ClientConnection]:
    clients = [stack.enter_context(connect(server.ws_url)) for _ in range(n)]
    for ws in clients:
        ws.send(json.dumps({"subscribe": ids}))
    return clients


def close_frame(ws: ClientConnection, timeout: float = 10.0) -> Any:
    """Read until the server closes; the close frame it sent."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    return closed.value.rcvd


def test_sigint_with_push_clients_exits_within_the_bound_and_loses_no_job(
    spawner: Spawner,
) -> None:
    with contextlib.ExitStack() as stack:
        _sigint_with_push_clients(stack, spawner)


def _sigint_with_push_clients(stack: contextlib.ExitStack, spawner: Spawner) -> None:
    env = {"GENSPOOL_DRAIN_TIMEOUT_S": str(DRAIN_S)}
    server = spawner.server([FAST[0], SLOW, STUCK], env=env)
    ids = [chat(server, "slow", f"slow {i}") for i in range(6)]
    ids += [chat(server, "stuck", f"stuck {i}") for i in range(2)]
    ids += [chat(server, "echo", f"echo {i}") for i in range(3)]
    server.wait(ids[0], until={"running", "succeeded"})
    server.wait(ids[6], until={"running"})  # a batch the drain cannot finish
    sse = [SSEClient(server.url, job_id) for job_id in ids[1:6]]
    for client in sse:
        client.start()
        assert client.opened.wait(10)
    websockets = ws_clients(stack, server, ids, 5)
    time.sleep(0.3)  # the streams are open on the server's side

    started = time.monotonic()
    server.proc.signal(signal.SIGINT)
    code = server.proc.wait(DRAIN_S + SLACK_S + 5)
    took = time.monotonic() - started
    assert code == 0, server.proc.stderr()
    # The 60 s batch holds the process for the whole drain, then goes back to the queue.
    assert DRAIN_S - 0.5 < took < DRAIN_S + SLACK_S, f"exited {took:.1f} s after SIGINT"

    for ws in websockets:
        frame = close_frame(ws)
        assert frame is not None, "the connection closed without a close frame"
        assert frame.code == 1001, frame
        assert "shutting down" in frame.reason
    for client in sse:
        client.join(10)
        assert not client.is_alive(), "an SSE stream did not end"
        assert client.error is None, client.error
        assert client.ended_cleanly(), client.lines[-3:]
    stored = dict(spawner.read_db(server.db, "SELECT status, COUNT(*) FROM jobs GROUP BY status"))
    assert "running" not in stored, f"a job was left leased: {stored}"
    assert stored.get("succeeded", 0) < len(ids), "the drain should have handed some back"

    again = spawner.server(FAST, db=server.db)
    done = again.wait_all(ids, timeout=30)
    assert [j["status"] for j in done] == ["succeeded"] * len(ids)
    assert "stopping: no new jobs are leased" in server.proc.stderr()


def test_second_sigint_exits_at_once_and_hands_back_the_held_jobs(spawner: Spawner) -> None:
    server = spawner.server([STUCK], env={"GENSPOOL_DRAIN_TIMEOUT_S": "60"})
    ids = [chat(server, "stuck", f"held {i}") for i in range(2)]
    server.wait(ids[0], until={"running"})  # the other may wait for the model's one slot

    server.proc.signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    server.proc.signal(signal.SIGINT)
    code = server.proc.wait(10)
    assert code == 130, server.proc.stderr()
    assert time.monotonic() - started < 3
    rows = spawner.read_db(server.db, "SELECT status, attempts, lease_token FROM jobs")
    assert rows == [("queued", 0, None)] * 2, rows
