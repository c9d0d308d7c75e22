"""Push connections of a real ``genspool serve`` are bounded, over real sockets: a client that
subscribes to a large result and never reads costs a bounded amount and is closed with a
reason; connection and subscription limits answer 429 or a close code; a binary frame is
answered with a close frame; an idle WebSocket is closed; a key revoked by another process (the
``genspool keys`` CLI) closes the WebSocket and SSE connections it opened within 5 s. Echo
models (named as such: they compute nothing) stand in for real ones; ``slow`` holds a job
running long enough to watch it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers.api import slow_model
from tests.helpers.processes import Server, Spawner

MODELS: list[dict[str, Any]] = [{"name": "echo", "provider": "echo"}, slow_model(20_000)]
ENV = {"GENSPOOL_DRAIN_TIMEOUT_S": "1"}
HI = {"role": "user", "content": "hi"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def close_of(ws: ClientConnection, timeout: float = 10.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"closed without a close frame: {closed}"
        return closed.rcvd.code, closed.rcvd.reason
    except TimeoutError:
        raise AssertionError(f"the server did not close within {timeout} s") from None


def subscribe(ws: ClientConnection, *ids: str) -> None:
    ws.send(json.dumps({"subscribe": list(ids)}))


def create_key(spawner: Spawner, server: Server, tenant: str, scopes: str) -> str:
    made = spawner.run(
        "keys", "create", "--tenant", tenant, "--scopes", scopes, "--db", server.db_url
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def serve(spawner: Spawner, name: str, env: dict[str, str]) -> Server:
    """``genspool serve`` on a database of its own, with ``env`` besides :data:`ENV`."""
    return spawner.server(MODELS, db=spawner.root / f"{name}.db", env={**ENV, **env})


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return serve(module_spawner, "main", {"GENSPOOL_PUSH_SEND_TIMEOUT_S": "3"})


def test_a_binary_frame_is_answered_with_a_close_frame_and_a_reason(server: Server) -> None:
    with connect(server.ws_url) as ws:
        ws.send(b"\x00\x01binary")
        code, reason = close_of(ws)
    assert code == 1003 and "binary" in reason and "subscribe" in reason


def test_a_reader_that_never_reads_costs_a_bounded_amount_and_is_closed(server: Server) -> None:
    big = [server.chat("echo", f"{i}" + "w" * 500_000)["id"] for i in range(12)]  # ~500 KB each
    server.wait_all(big)
    before = rss_kb(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 14)
    peak = before
    with connect(server.ws_url, sock=sock, max_queue=1, max_size=None) as ws:
        for _ in range(25):  # 150 MB of events, were they all queued
            for job_id in big:
                subscribe(ws, job_id)
        for _ in range(30):
            peak = max(peak, rss_kb(server.proc.pid))
            time.sleep(0.1)
        code, reason = close_of(ws, timeout=15)
    assert code == 1008 and "faster than this client read" in reason
    assert (peak - before) / 1024 < 40, f"grew {(peak - before) / 1024:.0f} MB"


def test_a_websocket_watching_no_job_is_closed_when_idle(module_spawner: Spawner) -> None:
    server = serve(module_spawner, "idle", {"GENSPOOL_PUSH_IDLE_S": "1"})
    with connect(server.ws_url) as ws:
        started = time.monotonic()
        code, reason = close_of(ws, timeout=10)
    assert code == 1000 and "idle" in reason
    assert time.monotonic() - started < 5


def test_connection_and_subscription_limits_answer_429_or_a_close_code(
    module_spawner: Spawner,
) -> None:
    env = {"GENSPOOL_PUSH_TOTAL": "2", "GENSPOOL_PUSH_SUBSCRIPTIONS": "2"}
    server = serve(module_spawner, "limits", env)
    jobs = [server.chat("slow", f"job {i}")["id"] for i in range(3)]
    with connect(server.ws_url) as first, connect(server.ws_url) as second:
        subscribe(first, jobs[0])
        assert json.loads(first.recv(timeout=5))["id"] == jobs[0]
        with connect(server.ws_url) as third:
            code, reason = close_of(third)
        assert code == 1013 and "push connections" in reason
        refused = server.client.get(f"/v1/jobs/{jobs[0]}/events")
        assert refused.status_code == 429, refused.text
        assert "push connections" in refused.json()["error"]["message"]
        assert "retry-after" in refused.headers
        subscribe(second, *jobs)  # one more unfinished job than allowed
        code, reason = close_of(second)
        assert code == 1008 and "too many unfinished jobs" in reason
        subscribe(first, jobs[0])  # the first one is still served
        second_ok = server.client.get(f"/v1/jobs/{jobs[1]}")
        assert second_ok.status_code == 200


def test_a_revoked_key_closes_its_open_websocket_and_sse_within_5_s(
    module_spawner: Spawner,
) -> None:
    server = serve(module_spawner, "keys", {"GENSPOOL_KEY_CACHE_S": "5"})
    admin = create_key(module_spawner, server, "acme", "admin")
    key = create_key(module_spawner, server, "acme", "read,submit")
    auth = {"Authorization": f"Bearer {key}"}
    job = server.client.post(
        "/v1/jobs",
        json={"url": "/v1/chat/completions", "body": {"model": "slow", "messages": [HI]}},
        headers=auth,
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    sse_lines: list[str] = []

    def read_sse() -> None:
        with httpx.stream(
            "GET", f"{server.url}/v1/jobs/{job_id}/events", headers=auth, timeout=20
        ) as stream:
            sse_lines.extend(stream.iter_lines())

    reader = threading.Thread(target=read_sse, daemon=True)
    reader.start()
    with connect(server.ws_url, additional_headers=auth) as ws:
        subscribe(ws, job_id)
        assert json.loads(ws.recv(timeout=5))["id"] == job_id
        time.sleep(0.5)
        revoked = module_spawner.run("keys", "revoke", key.split("_")[1], "--db", server.db_url)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        code, reason = close_of(ws, timeout=8)
        ws_s = time.monotonic() - started
        reader.join(8)
        sse_s = time.monotonic() - started
    assert code == 1008 and "revoked" in reason
    assert ws_s < 5, f"WebSocket closed {ws_s:.1f} s after the revocation"
    assert not reader.is_alive() and sse_s < 5, f"SSE still open {sse_s:.1f} s after it"
    assert any("revoked" in line for line in sse_lines if line.startswith(":")), sse_lines
    assert admin  # the admin key stays: auth stays on
