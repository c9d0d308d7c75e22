"""A queue/store server that is up but does not answer (paused with SIGSTOP: as a server that
swaps, or sits behind a stalled network, looks) makes requests fail fast with a 503, not hang
for the driver's socket timeouts and retries (20-30 s before); once it answers again, so does
the API. The servers paused are this session's own (``private_postgres``, ``private_redis``):
never the shared ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.api import CHAT, chat_body
from tests.helpers.processes import Spawner
from tests.helpers.servers import PrivateServer

MODELS = [{"name": "echo", "provider": "echo"}]
#: The backends' call_timeout_s (5 s), plus a request's own way there and back.
BOUND_S = 8.0


def tree(pid: int) -> list[int]:
    """``pid`` and its children: PostgreSQL serves each connection from a child process, which
    pausing the postmaster alone leaves running."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return [pid, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a child that ended meanwhile
            os.kill(pid, sig)


def namespaced(server: PrivateServer) -> str:
    if server.url.startswith("redis"):
        return f"{server.url}?prefix=gs_{uuid.uuid4().hex[:10]}"
    return f"{server.url}?schema=gs_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_paused_backend_answers_503_within_the_bound(
    spawner: Spawner, kind: str, request: pytest.FixtureRequest
) -> None:
    server: PrivateServer = request.getfixturevalue(f"private_{kind}")
    api = spawner.server(MODELS, command="api", db_url=namespaced(server))
    job = api.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("echo")}).json()
    paused = tree(server.pid)
    signal_all(paused, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = api.client.get(f"/v1/jobs/{job['id']}", timeout=60)
        waited = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert "did not answer within" in answer.json()["error"]["message"]
        assert waited < BOUND_S, f"{kind} paused: the request took {waited:.1f} s"
    finally:
        signal_all(paused, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while (status := api.client.get(f"/v1/jobs/{job['id']}").status_code) != 200:
        assert time.monotonic() < deadline, f"still {status} 20 s after the server came back"
        time.sleep(0.2)
