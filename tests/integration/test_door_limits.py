"""The door of a real ``genspool serve``, over real sockets: a request's head is bounded before
any key is checked (431, and no memory held for it), the Host and Origin checks hold on a real
uvicorn (HTTP and the WebSocket handshake), and no key reaches its logs at the most verbose
level, whatever the encoding of the parameter's name.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers.processes import Server, Spawner

MODELS = [{"name": "echo", "provider": "echo"}]
HEAD_START = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
CHUNK = b"a" * 65536
OPAQUE = "opaque-Token-5eb1c2d7"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def connected(server: Server) -> socket.socket:
    url = urllib.parse.urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    return sock


def answer_of(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """What the server sent before closing (b"" when it reset the connection instead)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def flood_head(socks: list[socket.socket], total: int) -> dict[int, int]:
    """Send an endless header line on every socket, round-robin, up to ``total`` bytes each,
    until the server answers or closes; returns the bytes each managed to send."""
    sent = {s.fileno(): 0 for s in socks}
    live = list(socks)
    for s in live:
        s.sendall(HEAD_START)
    while live:
        for s in list(live):
            readable, _, _ = select.select([s], [], [], 0)
            if readable or sent[s.fileno()] >= total:
                live.remove(s)
                continue
            try:
                s.sendall(CHUNK)
                sent[s.fileno()] += len(CHUNK)
            except OSError:  # reset or broken pipe: the server closed it
                live.remove(s)
    return sent


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS)


def test_an_oversized_head_is_answered_431(server: Server) -> None:
    with connected(server) as sock:
        sock.sendall(HEAD_START + b"a" * 80_000)  # over the 64 KiB default, never finished
        answer = answer_of(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert "GENSPOOL_MAX_HEAD_BYTES" in error["message"]
    assert server.client.get("/healthz").status_code == 200


def test_too_many_headers_are_answered_431(server: Server) -> None:
    with connected(server) as sock:
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        answer = answer_of(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"more than 100 headers" in answer
    fine = {f"X-H{i}": "1" for i in range(60)}
    assert server.client.get("/healthz", headers=fine).status_code == 200


def test_ten_unfinished_32_mb_heads_hold_no_memory(server: Server) -> None:
    for _ in range(20):  # warm: the first requests allocate what every request reuses
        server.client.get("/healthz")
    before = rss_kb(server.proc.pid)
    socks = [connected(server) for _ in range(10)]
    try:
        started = time.monotonic()
        sent = flood_head(socks, 32 * 1024 * 1024)
        during = rss_kb(server.proc.pid)
        answers = [answer_of(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    grown_mb = (during - before) / 1024
    print(
        f"10 heads: sent {max(sent.values()) // 1024} KiB at most per connection in"
        f" {time.monotonic() - started:.1f} s; RSS {before // 1024} -> {during // 1024} MB"
    )
    # Each is answered 431 or, when the client was still sending, reset: never read to 32 MB.
    assert all(a.startswith(b"HTTP/1.1 431 ") or a == b"" for a in answers), answers
    # Never read to 32 MB: what got sent sits mostly in the kernel's socket buffers.
    assert max(sent.values()) < 4 * 1024 * 1024, sent
    assert grown_mb < 8, f"RSS grew {grown_mb:.1f} MB for 10 unfinished heads"
    assert server.client.get("/healthz").status_code == 200


def test_host_and_origin_checks_hold_on_a_real_server(module_spawner: Spawner) -> None:
    named = module_spawner.server(MODELS, env={"GENSPOOL_ALLOWED_HOSTS": "genspool.lan"})
    port = urllib.parse.urlsplit(named.url).port
    foreign = named.client.get("/v1/jobs", headers={"host": f"evil.example:{port}"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "host_not_allowed"
    lan = named.client.get("/v1/jobs", headers={"host": f"genspool.lan:{port}"})
    assert lan.status_code == 200
    simple = named.client.post(
        "/v1/chat/completions",
        content=json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x"}]}),
        headers={"content-type": "text/plain", "origin": "http://evil.example"},
    )
    assert simple.status_code == 403 and simple.json()["error"]["code"] == "origin_not_allowed"
    with pytest.raises(InvalidStatus) as refused:
        connect(named.ws_url, origin="http://evil.example", proxy=None)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert b"origin_not_allowed" in refused.value.response.body
    with connect(named.ws_url, origin=named.url, proxy=None) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"subscribe": ["job_nope"]}))
        assert json.loads(ws.recv(timeout=10))["status"] == "not_found"


def test_no_key_in_the_logs_of_a_real_server_at_trace(module_spawner: Spawner) -> None:
    traced = module_spawner.server(MODELS, env={"GENSPOOL_LOG_LEVEL": "trace"})
    fake_key = "gsk_0123456789ab_" + OPAQUE
    names = ["token", "tok%65n", "%54OKEN", "tok%2565n", "api%2Dkey", "access_token"]
    for name in names:
        for value in (OPAQUE, fake_key.replace("_", "%5F")):
            with connect(f"{traced.ws_url}?{name}={value}", proxy=None) as ws:  # open mode
                ws.send(json.dumps({"subscribe": ["job_nope"]}))
                ws.recv(timeout=10)
            traced.client.get(f"/v1/jobs?{name}={value}")
    traced.client.get("/v1/jobs", headers={"Authorization": f"Bearer {fake_key}"})
    traced.client.get("/v1/jobs", headers={"X-Api-Key": OPAQUE})
    with httpx.Client(base_url=traced.url) as client:  # a last request, so the logs are out
        client.get("/healthz")
    logs = traced.proc.stderr() + traced.proc.stdout()
    assert "tok%65n=[redacted]" in logs  # uvicorn did log the paths, blanked
    plain = urllib.parse.unquote(urllib.parse.unquote(logs))
    assert OPAQUE not in logs and OPAQUE not in plain


def test_half_sent_requests_are_answered_408_and_closed(module_spawner: Spawner) -> None:
    """Slowloris: heads that never finish (and a connection that sends nothing) are closed once
    GENSPOOL_HEAD_TIMEOUT_S has passed; a request that is merely slow still gets its answer."""
    server = module_spawner.server(MODELS, env={"GENSPOOL_HEAD_TIMEOUT_S": "1"})
    half = [connected(server) for _ in range(20)]
    silent = connected(server)
    for sock in half:
        sock.sendall(HEAD_START + b"a")  # and then nothing more
    started = time.monotonic()
    answers = [answer_of(sock, timeout=5) for sock in half]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:200]
    assert b"GENSPOOL_HEAD_TIMEOUT_S" in answers[0]
    assert answer_of(silent, timeout=5).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4
    for sock in (*half, silent):
        sock.close()
    with connected(server) as slow:  # a head sent in pieces within the time is served
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            slow.sendall(piece)
            time.sleep(0.2)
        slow.settimeout(5)
        assert slow.recv(64).startswith(b"HTTP/1.1 200 ")
