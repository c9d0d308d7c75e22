"""Fuzzing the WebSocket protocol (``/v1/ws``): whatever a client sends (text that is not JSON,
JSON of any shape, ``subscribe`` with anything in it, binary frames), the server answers with
JSON messages or closes with a code and a reason; it never fails (starlette's test client
raises whatever the app raised). After each message a probe (a subscription to a job id no one
has) must come back, so a server that stopped answering fails too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient, WebSocketTestSession

from genspool.testing.inprocess import build
from tests.helpers.api import CHAT, FAST_RETRY, chat_body

APP = build([{"name": "echo", "provider": "echo"}], worker=True, retry=FAST_RETRY)
#: Close codes the protocol documents (genspool.api.routes_push), besides a normal close.
CLOSE_CODES = {1000, 1001, 1003, 1008, 1009, 1011, 1013}

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
IDS = st.text(max_size=24) | st.just("job_00000000000000000000") | st.just("done")


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, Any]:
    """One client message: ``("bytes", b)`` or ``("text", s)``."""
    return draw(
        st.one_of(
            st.binary(max_size=16).map(lambda b: ("bytes", b)),
            st.text(max_size=32).map(lambda t: ("text", t)),
            JSON_VALUES.map(lambda v: ("text", json.dumps(v))),
            JSON_VALUES.map(lambda v: ("text", json.dumps({"subscribe": v}))),
            st.lists(IDS, max_size=4).map(lambda ids: ("text", json.dumps({"subscribe": ids}))),
            st.just(("text", "NaN")),
            st.just(("text", '{"subscribe": ["\\ud800"]}')),
        )
    )


@pytest.fixture(scope="module")
def client() -> Iterator[tuple[TestClient, str]]:
    """The app, and the id of a job that has ended (``done`` in a message stands for it)."""
    with TestClient(APP.app, base_url="http://testserver") as c:
        job = c.post("/v1/jobs", json={"url": CHAT, "body": chat_body("echo")}).json()
        for _ in range(200):
            if c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded":
                break
        yield c, job["id"]


def probe(ws: WebSocketTestSession) -> dict[str, Any] | None:
    """Subscribe to an id no job has and read until its answer comes; every message before it
    must be a JSON object. None when the server closed instead (with a code and a reason)."""
    mark = f"probe-{uuid.uuid4().hex}"
    ws.send_text(json.dumps({"subscribe": [mark]}))
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            assert message.get("code") in CLOSE_CODES, message
            assert message.get("reason"), message
            return None
        frame = json.loads(message["text"])
        assert isinstance(frame, dict), frame
        if frame.get("id") == mark:
            return frame


@given(sent=st.lists(messages(), min_size=1, max_size=5))
@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_any_message_gets_an_answer_or_a_close_with_a_reason(
    client: tuple[TestClient, str], sent: list[tuple[str, Any]]
) -> None:
    c, done = client
    with c.websocket_connect("/v1/ws") as ws:
        for kind, data in sent:
            if kind == "bytes":
                ws.send_bytes(data)
            else:
                ws.send_text(data.replace('"done"', json.dumps(done)))
            if probe(ws) is None:
                return


def test_a_binary_frame_is_answered_with_a_close_frame_and_a_reason(
    client: tuple[TestClient, str],
) -> None:
    c, _ = client
    with c.websocket_connect("/v1/ws") as ws:
        ws.send_bytes(b"\x00\x01")
        message = ws.receive()
        assert message["type"] == "websocket.close" and message["code"] == 1003, message
        assert "binary" in message["reason"]
