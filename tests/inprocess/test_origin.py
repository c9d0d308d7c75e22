"""Open mode on loopback is sealed against web pages: a foreign ``Host`` (DNS rebinding), a
cross-site POST (the ``text/plain`` "simple" request that needs no preflight) and a WebSocket
from a foreign ``Origin`` are refused with 403 in the API's error shape, before routing;
requests without those headers (curl, SDKs) pass.

In process (``genspool.testing.inprocess``, no key: open mode); the WebSocket through
starlette's TestClient, since httpx's ASGI transport speaks none. The same checks over a real
uvicorn are in ``tests/integration/test_door_limits.py``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from genspool.api.origin import OriginGuard, allowed_hosts
from genspool.testing.inprocess import InProcess, build
from tests.helpers.api import CHAT, MODELS, assert_error, chat_body

FOREIGN = "http://evil.example"
TEXT_PLAIN = {"content-type": "text/plain"}


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "0.0.0.0:8000", "127.0.0.1.evil.example"]
)
async def test_a_foreign_host_is_refused_on_every_route(gs: InProcess, host: str) -> None:
    for method, path in (("GET", "/healthz"), ("GET", "/v1/jobs"), ("GET", "/v1/models")):
        answer = await gs.client.request(method, path, headers={"host": host})
        message = assert_error(answer, 403, "host_not_allowed")
        assert "DNS rebinding" in message and "GENSPOOL_ALLOWED_HOSTS" in message


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:8000", "localhost.", "127.0.0.1:8000", "127.8.9.10", "[::1]:8000"],
)
async def test_loopback_hosts_pass(gs: InProcess, host: str) -> None:
    assert (await gs.client.get("/v1/models", headers={"host": host})).status_code == 200


async def test_a_cross_site_text_plain_post_stores_nothing(gs: InProcess) -> None:
    body = json.dumps(chat_body("echo"))
    for headers in ({"origin": FOREIGN}, {"origin": "null"}, {"sec-fetch-site": "cross-site"}):
        for path in (CHAT, "/v1/jobs"):
            answer = await gs.client.post(path, content=body, headers={**TEXT_PLAIN, **headers})
            message = assert_error(answer, 403, "origin_not_allowed")
            assert "GENSPOOL_ALLOWED_ORIGINS" in message
    assert (await gs.client.get("/v1/jobs")).json()["data"] == []


async def test_same_origin_and_headerless_requests_pass(gs: InProcess) -> None:
    job = {"url": CHAT, "body": chat_body("echo")}
    for headers in (
        {},  # curl, an SDK
        {"origin": "http://genspool.test", "sec-fetch-site": "same-origin"},
        {"origin": "http://genspool.test:80"},
        {"sec-fetch-site": "same-site"},
        {"sec-fetch-site": "none"},  # typed in the address bar
    ):
        assert (await gs.client.post("/v1/jobs", json=job, headers=headers)).status_code == 202
    # Reads from another origin pass: the browser does not show the page the answer.
    assert (await gs.client.get("/v1/jobs", headers={"origin": FOREIGN})).status_code == 200


async def test_another_port_on_loopback_is_another_origin(gs: InProcess) -> None:
    headers = {"host": "localhost:8000", "origin": "http://localhost:3000"}
    answer = await gs.client.post(
        "/v1/jobs", json={"url": CHAT, "body": chat_body("echo")}, headers=headers
    )
    assert_error(answer, 403, "origin_not_allowed")


def ws_refused(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/v1/ws", headers=headers),
    ):
        pass
    return refused.value


def test_a_websocket_from_a_foreign_origin_or_host_is_refused() -> None:
    with TestClient(build(MODELS).app) as client:
        assert_error(ws_refused(client, {"origin": FOREIGN}), 403, "origin_not_allowed")
        assert_error(ws_refused(client, {"host": "evil.example"}), 403, "host_not_allowed")
        assert_error(ws_refused(client, {"sec-fetch-site": "cross-site"}), 403)
        for headers in ({}, {"origin": "http://testserver"}):
            with client.websocket_connect("/v1/ws", headers=headers) as ws:
                ws.send_json({"subscribe": ["job_nope"]})
                assert ws.receive_json()["status"] == "not_found"


def guarded(**allowed: list[str]) -> httpx.AsyncClient:
    async def ok(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/", ok, methods=["GET", "POST"])])
    transport = httpx.ASGITransport(app=OriginGuard(inner, **allowed))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


async def test_allow_lists_admit_named_hosts_and_origins_only() -> None:
    async with guarded(hosts=["genspool.lan"], origins=["https://ui.example/"]) as client:
        assert (await client.get("/", headers={"host": "GenSpool.lan:8000"})).status_code == 200
        assert (await client.get("/", headers={"host": "other.lan"})).status_code == 403
        for origin, status in (("https://ui.example", 200), ("http://ui.example", 403)):
            assert (await client.post("/", headers={"origin": origin})).status_code == status
    async with guarded(hosts=["*"], origins=["*"]) as client:
        headers = {"host": "any.example", "origin": FOREIGN, "sec-fetch-site": "cross-site"}
        assert (await client.post("/", headers=headers)).status_code == 200


def test_the_default_allow_list_is_the_bound_host_or_any_on_a_wildcard() -> None:
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1"]
    assert allowed_hosts("gpu-box.lan") == ["gpu-box.lan"]
    assert allowed_hosts("0.0.0.0") == ["*"] and allowed_hosts("::") == ["*"]
    assert allowed_hosts("0.0.0.0", ["api.example", " "]) == ["api.example"]
