"""Every route of the OpenAPI schema refuses a missing, unknown, revoked or malformed key
(401) and a key without its scope (403); admin passes them all. Routes added later are checked
by what they declare, without touching this file."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from genspool.testing.inprocess import InProcess, build
from tests.helpers.api import (
    MODELS,
    UNKNOWN_KEY,
    As,
    Keys,
    assert_error,
    bearer,
    make_keys,
    operations,
    secret,
)

EXPECTED_SCOPES = {
    ("GET", "/healthz"): "public",
    ("POST", "/v1/jobs"): "submit",
    ("GET", "/v1/jobs"): "read",
    ("GET", "/v1/jobs/{job_id}"): "read",
    ("DELETE", "/v1/jobs/{job_id}"): "submit",
    ("POST", "/v1/jobs/{job_id}/cancel"): "submit",
    ("GET", "/v1/jobs/{job_id}/events"): "read",
    ("GET", "/v1/dlq"): "read",
    ("POST", "/v1/dlq/{job_id}/replay"): "submit",
    ("GET", "/v1/models"): "read",
    ("POST", "/v1/chat/completions"): "submit",
    ("POST", "/v1/embeddings"): "submit",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("POST", "/v1/keys/{key_id}/revoke"): "admin",
}


async def routes(gs: InProcess) -> list[tuple[str, str, str, dict[str, Any]]]:
    return list(operations((await gs.client.get("/openapi.json")).json()))


async def test_the_schema_declares_a_scope_for_every_route(gs: InProcess) -> None:
    declared = {(m, t): op.get("x-genspool-scope") for m, t, _, op in await routes(gs)}
    for route, scope in declared.items():
        assert scope in {"public", "read", "submit", "admin"}, (route, scope)
    for route, scope in EXPECTED_SCOPES.items():
        assert declared.get(route) == scope, (route, declared.get(route))
    assert [r for r, s in declared.items() if s == "public"] == [("GET", "/healthz")]


async def test_every_route_refuses_a_missing_unknown_revoked_or_malformed_key(
    gs: InProcess, keys: Keys
) -> None:
    attempts = {
        "missing": {},
        "unknown": bearer(UNKNOWN_KEY),
        "revoked": bearer(keys.revoked),
        "malformed": {"Authorization": "Bearer not-a-key"},
        "wrong secret": bearer(keys.admin[:-6] + "abcdef"),
        "not bearer": {"Authorization": f"Basic {keys.admin}"},
    }
    checked = 0
    for method, template, path, op in await routes(gs):
        if op["x-genspool-scope"] == "public":
            continue
        for label, headers in attempts.items():
            response = await gs.client.request(method, path, headers=headers, json={})
            where = f"{method} {template} with a {label} key"
            assert response.status_code == 401, (where, response.text)
            assert response.headers["www-authenticate"] == "Bearer", where
            message = assert_error(response, 401, "invalid_api_key")
            assert keys.admin not in message and secret(keys.revoked) not in message
            if label == "revoked":
                assert "revoked" in message, where
        # A key in the query string counts only on the WebSocket route.
        response = await gs.client.request(method, path, params={"token": keys.admin}, json={})
        assert response.status_code == 401, (method, template, response.text)
        checked += 1
    assert checked >= len(EXPECTED_SCOPES) - 1


async def test_every_route_refuses_a_key_without_its_scope(gs: InProcess, keys: Keys) -> None:
    lacking = {"read": keys.a_submit, "submit": keys.a_read, "admin": keys.a}
    for method, template, path, op in await routes(gs):
        needed = op["x-genspool-scope"]
        if needed == "public":
            continue
        response = await As(gs, lacking[needed]).request(method, path, json={})
        message = assert_error(response, 403, "insufficient_scope")
        assert f"'{needed}' scope" in message, (method, template, message)


async def test_admin_passes_every_route(gs: InProcess, keys: Keys) -> None:
    for method, template, path, _ in await routes(gs):
        response = await As(gs, keys.admin).request(method, path, json={})
        assert response.status_code not in (401, 403, 429), (method, template, response.text)


async def test_healthz_and_the_schema_are_open(gs: InProcess, keys: Keys) -> None:
    """As the README says: with keys, only these answer without one (they hold no data)."""
    assert (await gs.client.get("/healthz")).json() == {"status": "ok"}
    for page in ("/openapi.json", "/docs", "/redoc"):
        assert (await gs.client.get(page)).status_code == 200, page


async def test_without_keys_the_api_is_open_until_a_first_key_is_made(gs: InProcess) -> None:
    assert (await gs.client.get("/v1/jobs")).status_code == 200
    await make_keys(gs.services.keys)
    assert_error(await gs.client.get("/v1/jobs"), 401, "invalid_api_key")


async def test_a_key_revoked_while_the_app_runs_is_refused_at_once(
    gs: InProcess, keys: Keys
) -> None:
    admin = As(gs, keys.admin)
    made = await admin.request("POST", "/v1/keys", json={"tenant": "delta", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    token = made.json()["key"]
    listed = (await admin.request("GET", "/v1/keys")).text
    assert secret(token) not in listed and '"digest"' not in listed
    assert (await As(gs, token).request("GET", "/v1/jobs")).status_code == 200
    gone = await admin.request("POST", f"/v1/keys/{made.json()['id']}/revoke")
    assert gone.json()["revoked"] is True
    assert_error(await As(gs, token).request("GET", "/v1/jobs"), 401, "invalid_api_key")


def ws_refusal(client: TestClient, path: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status with which the app refused a WebSocket handshake."""
    connecting = client.websocket_connect(path, headers=headers or {})
    with pytest.raises(WebSocketDenialResponse) as refused, connecting:
        pass
    assert_error(refused.value, refused.value.status_code)
    return refused.value.status_code


def test_websocket_needs_a_key_with_read_in_the_header_or_the_query() -> None:
    """starlette's TestClient: httpx's ASGI transport speaks no WebSocket."""
    built = build(MODELS)
    with TestClient(built.app) as client:
        keys: Keys = client.portal.call(make_keys, built.services.keys)  # type: ignore[union-attr]
        assert ws_refusal(client, "/v1/ws") == 401
        for headers in (bearer(UNKNOWN_KEY), bearer(keys.revoked)):
            assert ws_refusal(client, "/v1/ws", headers) == 401
        assert ws_refusal(client, f"/v1/ws?token={UNKNOWN_KEY}") == 401
        assert ws_refusal(client, "/v1/ws", bearer(keys.a_submit)) == 403
        for path, headers in (("/v1/ws", bearer(keys.a_read)), (f"/v1/ws?token={keys.a}", {})):
            with client.websocket_connect(path, headers=headers) as ws:
                ws.send_json({"subscribe": ["job_nope"]})
                assert ws.receive_json()["status"] == "not_found"
