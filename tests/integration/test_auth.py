"""API keys, scopes and tenants end to end: keys made with the real ``genspool keys`` CLI on a
SQLite file, then a real ``genspool serve`` process on that file, probed over HTTP and
WebSocket. Every route of the OpenAPI schema is checked, so routes added later are covered
without touching this file. Echo models (named as such: they compute nothing) stand in for
real ones; ``doomed`` always times out, which is a real way to reach the dead-letter queue.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers.processes import Server, Spawner

CHAT = "/v1/chat/completions"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": 800},
        "batching": {"max_batch_size": 1},
    },
    {
        "name": "doomed",
        "provider": "echo",
        "max_attempts": 1,
        "limits": {"timeout_s": 0.05},
        "options": {"latency_ms": 300},
    },
]
ENV = {"GENSPOOL_KEY_CACHE_S": "1", "GENSPOOL_RETRY_BASE_S": "0.05"}
#: Scopes the routes that exist today must declare; routes added later are checked by what
#: they declare in the schema (and a route that declares nothing needs admin).
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
UNKNOWN_KEY = "gsk_ffffffffffff_" + "x" * 43
PROMPT = "canary-prompt-7f3a tell nobody"  # must never reach a log line
KEY_LINE = re.compile(r"^gsk_[0-9a-f]{12}_[A-Za-z0-9_-]{40,}$")


# -- fixtures and helpers --------------------------------------------------------------------


def create_key(spawner: Spawner, db: Path, tenant: str, scopes: str, *more: str) -> str:
    """``genspool keys create`` on the database; the key is the last line of its output."""
    result = spawner.run(
        "keys", "create", "--tenant", tenant, "--scopes", scopes, "--db", spawner.sqlite_url(db),
        *more,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert KEY_LINE.match(key), result.stdout
    return key


def key_id(key: str) -> str:
    return key.split("_")[1]


def secret(key: str) -> str:
    return key.split("_", 2)[2]


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "auth.db"
    return path


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    """Keys made before the server starts, as an operator would."""
    made = {
        "admin": create_key(module_spawner, db, "ops", "admin", "--name", "root"),
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "a_read": create_key(module_spawner, db, "acme", "read"),
        "a_submit": create_key(module_spawner, db, "acme", "submit"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
        "revoked": create_key(module_spawner, db, "acme", "submit,read,admin"),
        "limited": create_key(module_spawner, db, "acme", "submit,read", "--rpm", "3"),
    }
    url = module_spawner.sqlite_url(db)
    revoked = module_spawner.run("keys", "revoke", key_id(made["revoked"]), "--db", url)
    assert revoked.returncode == 0, revoked.stderr
    return made


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, keys: dict[str, str]) -> Server:
    return module_spawner.server(MODELS, db=db, env=ENV)


class As:
    """The API as one key sees it."""

    def __init__(self, server: Server, key: str | None) -> None:
        self.server, self.key = server, key
        self.headers = bearer(key)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response: httpx.Response = self.server.client.request(
            method, path, headers=headers, **kwargs
        )
        return response

    def chat(self, model: str, content: str = "hi", expect: int = 202) -> dict[str, Any]:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        response = self.request("POST", "/v1/jobs", json={"url": CHAT, "body": body})
        assert response.status_code == expect, response.text
        out: dict[str, Any] = response.json()
        return out

    def get(self, job_id: str) -> httpx.Response:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, until: frozenset[str] = TERMINAL) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job: dict[str, Any] = self.get(job_id).json()
            return job if job["status"] in until else None

        found: dict[str, Any] = _wait(reached, f"{job_id} in {sorted(until)}")
        return found

    def ids(self, path: str = "/v1/jobs", **params: Any) -> set[str]:
        response = self.request("GET", path, params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["data"]}

    def ws(self, token_in_query: bool = False) -> ClientConnection:
        if token_in_query:
            return connect(f"{self.server.ws_url}?token={self.key}")
        return connect(self.server.ws_url, additional_headers=self.headers)


def _wait(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """An OpenAI-shaped error with this status and code; returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["type"]
    message: str = error["message"]
    return message


def operations(server: Server) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """``(method, path template, concrete path, operation)`` for every route of the schema."""
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    fill = {"job_id": "job_00000000000000000000", "key_id": "ffffffffffff"}
    for template, item in schema["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: fill.get(m[1], "x"), template)
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method.upper(), template, path, op


def ws_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status with which the server refused a WebSocket handshake."""
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers or {}).close()
    status: int = refused.value.response.status_code
    return status


def ws_first(ws: ClientConnection, job_id: str) -> dict[str, Any]:
    ws.send(json.dumps({"subscribe": [job_id]}))
    event: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return event


# -- every route: 401, 403, public ----------------------------------------------------------


def test_the_schema_declares_a_scope_for_every_route(server: Server) -> None:
    declared = {(m, t): op.get("x-genspool-scope") for m, t, _, op in operations(server)}
    for route, scope in declared.items():
        assert scope in {"public", "read", "submit", "admin"}, (route, scope)
    for route, scope in EXPECTED_SCOPES.items():
        assert declared.get(route) == scope, (route, declared.get(route))
    assert [r for r, s in declared.items() if s == "public"] == [("GET", "/healthz")]


def test_every_route_refuses_a_missing_unknown_revoked_or_malformed_key(
    server: Server, keys: dict[str, str]
) -> None:
    attempts = {
        "missing": {},
        "unknown": bearer(UNKNOWN_KEY),
        "revoked": bearer(keys["revoked"]),
        "malformed": {"Authorization": "Bearer not-a-key"},
        "wrong secret": bearer(keys["admin"][:-6] + "abcdef"),
        "not bearer": {"Authorization": f"Basic {keys['admin']}"},
    }
    checked = 0
    for method, template, path, op in operations(server):
        if op["x-genspool-scope"] == "public":
            continue
        for label, headers in attempts.items():
            response = server.client.request(method, path, headers=headers, json={})
            where = f"{method} {template} with a {label} key"
            assert response.status_code == 401, (where, response.text)
            assert response.headers["www-authenticate"] == "Bearer", where
            message = assert_error(response, 401, "invalid_api_key")
            assert keys["admin"] not in message and secret(keys["revoked"]) not in message
            if label == "revoked":
                assert "revoked" in message, where
        # A key in the query string counts only on the WebSocket route.
        response = server.client.request(method, path, params={"token": keys["admin"]}, json={})
        assert response.status_code == 401, (method, template, response.text)
        checked += 1
    assert checked >= len(EXPECTED_SCOPES) - 1


def test_every_route_refuses_a_key_without_its_scope(server: Server, keys: dict[str, str]) -> None:
    lacking = {"read": keys["a_submit"], "submit": keys["a_read"], "admin": keys["a"]}
    for method, template, path, op in operations(server):
        needed = op["x-genspool-scope"]
        if needed == "public":
            continue
        response = server.client.request(method, path, headers=bearer(lacking[needed]), json={})
        message = assert_error(response, 403, "insufficient_scope")
        assert f"'{needed}' scope" in message, (method, template, message)


def test_admin_passes_every_route(server: Server, keys: dict[str, str]) -> None:
    for method, template, path, _ in operations(server):
        response = server.client.request(method, path, headers=bearer(keys["admin"]), json={})
        assert response.status_code not in (401, 403, 429), (method, template, response.text)


def test_healthz_and_the_schema_are_open(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


def test_websocket_needs_a_key_with_read_in_the_header_or_the_query(
    server: Server, keys: dict[str, str]
) -> None:
    assert ws_status(server.ws_url) == 401
    assert ws_status(server.ws_url, bearer(UNKNOWN_KEY)) == 401
    assert ws_status(server.ws_url, bearer(keys["revoked"])) == 401
    assert ws_status(f"{server.ws_url}?token={UNKNOWN_KEY}") == 401
    assert ws_status(server.ws_url, bearer(keys["a_submit"])) == 403
    job = As(server, keys["a"]).chat("echo")
    for in_query in (False, True):
        with As(server, keys["a_read"]).ws(token_in_query=in_query) as ws:
            event = ws_first(ws, job["id"])
            while event["status"] not in TERMINAL:
                event = json.loads(ws.recv(timeout=10))
            assert event["id"] == job["id"]


# -- tenants ---------------------------------------------------------------------------------


def test_another_tenants_job_is_exactly_like_an_unknown_one(
    server: Server, keys: dict[str, str]
) -> None:
    a, b = As(server, keys["a"]), As(server, keys["b"])
    blocker = a.chat("slow", "blocker")
    a.wait(blocker["id"], frozenset({"running"}))
    queued = a.chat("slow", "queued behind")
    unknown = "job_ffffffffffffffffffffffff"

    def same_as_unknown(method: str, suffix: str) -> None:
        theirs = b.request(method, f"/v1/jobs/{queued['id']}{suffix}")
        nobody = b.request(method, f"/v1/jobs/{unknown}{suffix}")
        assert theirs.status_code == nobody.status_code == 404, (method, suffix, theirs.text)
        assert theirs.json() == json.loads(nobody.text.replace(unknown, queued["id"]))

    same_as_unknown("GET", "")
    same_as_unknown("GET", "/events")
    same_as_unknown("POST", "/cancel")
    same_as_unknown("DELETE", "")
    assert a.get(queued["id"]).json()["status"] in {"queued", "running"}  # b cancelled nothing

    with b.ws() as ws:
        theirs = ws_first(ws, queued["id"])
        nobody = ws_first(ws, unknown)
    assert theirs["status"] == nobody["status"] == "not_found"
    assert theirs == json.loads(json.dumps(nobody).replace(unknown, queued["id"]))

    assert a.request("POST", f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"


def test_dead_letters_are_per_tenant(server: Server, keys: dict[str, str]) -> None:
    a, b, admin = As(server, keys["a"]), As(server, keys["b"]), As(server, keys["admin"])
    dead = a.chat("doomed", "will fail")
    assert a.wait(dead["id"])["status"] == "failed"
    theirs = b.request("POST", f"/v1/dlq/{dead['id']}/replay")
    assert_error(theirs, 404, "not_found")
    assert dead["id"] not in b.ids("/v1/dlq")
    assert dead["id"] in a.ids("/v1/dlq")
    assert dead["id"] in admin.ids("/v1/dlq")
    assert a.request("POST", f"/v1/dlq/{dead['id']}/replay").json()["status"] == "queued"
    assert a.wait(dead["id"])["status"] == "failed"
    # admin replays any tenant's dead letter
    replayed = admin.request("POST", f"/v1/dlq/{dead['id']}/replay")
    assert replayed.status_code == 200, replayed.text


def test_lists_show_only_the_callers_tenant_and_admin_sees_all(
    server: Server, keys: dict[str, str]
) -> None:
    a, b, admin = As(server, keys["a"]), As(server, keys["b"]), As(server, keys["admin"])
    mine = a.chat("echo", "from a")["id"]
    theirs = b.chat("echo", "from b")["id"]
    for job_id in (mine, theirs):
        admin.wait(job_id)
    assert mine in a.ids() and theirs not in a.ids()
    assert theirs in b.ids() and mine not in b.ids()
    assert {mine, theirs} <= admin.ids()
    assert mine in admin.ids(tenant="acme") and theirs not in admin.ids(tenant="acme")
    assert admin.get(theirs).status_code == 200
    # a key of tenant acme with only read sees acme's jobs, whoever submitted them
    assert mine in As(server, keys["a_read"]).ids()
    refused = b.request("GET", "/v1/jobs", params={"tenant": "acme"})
    assert "admin" in assert_error(refused, 403, "insufficient_scope")
    assert b.request("GET", "/v1/jobs", params={"tenant": "beta"}).status_code == 200


def test_openai_routes_submit_under_the_keys_tenant(server: Server, keys: dict[str, str]) -> None:
    a, b = As(server, keys["a"]), As(server, keys["b"])
    before = b.ids()
    body = {"model": "echo", "messages": [{"role": "user", "content": "openai route"}]}
    answer = b.request("POST", CHAT, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "openai route"
    new = b.ids() - before
    assert len(new) == 1
    (job_id,) = new
    assert_error(a.get(job_id), 404, "not_found")
    assert job_id not in a.ids()
    models = a.request("GET", "/v1/models")
    assert models.status_code == 200 and models.json()["data"]


# -- rate limit, revocation, key management ----------------------------------------------------


def test_per_key_rate_limit_answers_429_and_accepted_jobs_still_finish(
    server: Server, keys: dict[str, str]
) -> None:
    limited, other = As(server, keys["limited"]), As(server, keys["a"])
    accepted = [limited.chat("echo", f"limited {i}")["id"] for i in range(3)]
    refused = limited.request(
        "POST", "/v1/jobs", json={"url": CHAT, "body": {"model": "echo", "messages": []}}
    )
    message = assert_error(refused, 429, "rate_limit_exceeded")
    assert "3 requests per minute" in message
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 20, retry_after
    chat = limited.request("POST", CHAT, json={"model": "echo", "messages": []})
    assert_error(chat, 429, "rate_limit_exceeded")  # one budget for every submitting route
    assert limited.request("GET", "/v1/jobs").status_code == 200  # reading is not limited
    other.chat("echo", "another key of the same tenant is not limited")
    for job_id in accepted:
        assert limited.wait(job_id)["status"] == "succeeded"


def test_keys_made_and_revoked_while_the_server_runs(
    module_spawner: Spawner, server: Server, db: Path
) -> None:
    fresh = create_key(module_spawner, db, "gamma", "read")
    user = As(server, fresh)
    assert user.request("GET", "/v1/jobs").status_code == 200  # usable at once
    revoked = module_spawner.run("keys", "revoke", key_id(fresh), "--db", server.db_url)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    _wait(lambda: user.request("GET", "/v1/jobs").status_code == 401, "revocation", 5)
    assert time.monotonic() - started < 3  # GENSPOOL_KEY_CACHE_S=1, plus slack


def test_admin_manages_keys_over_http(server: Server, keys: dict[str, str]) -> None:
    admin = As(server, keys["admin"])
    made = admin.request("POST", "/v1/keys", json={"tenant": "delta", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    token = made.json()["key"]
    assert KEY_LINE.match(token)
    listed = admin.request("GET", "/v1/keys").text
    assert secret(token) not in listed and '"digest"' not in listed
    assert As(server, token).request("GET", "/v1/jobs").status_code == 200
    gone = admin.request("POST", f"/v1/keys/{key_id(token)}/revoke")
    assert gone.json()["revoked"] is True
    _wait(lambda: As(server, token).request("GET", "/v1/jobs").status_code == 401, "revoke", 5)


# -- the CLI ---------------------------------------------------------------------------------


def test_keys_create_prints_the_key_last_and_list_never_shows_secrets(
    module_spawner: Spawner, server: Server, db: Path, keys: dict[str, str]
) -> None:
    url = module_spawner.sqlite_url(db)
    made = module_spawner.run(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--name", "n1", "--db", url
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.strip().splitlines()
    assert KEY_LINE.match(lines[-1]) and "cannot be shown again" in lines[-2]
    listed = module_spawner.run("keys", "list", "--db", url)
    assert listed.returncode == 0, listed.stderr
    digests = [
        json.loads(v)["digest"]
        for (v,) in module_spawner.read_db(db, "SELECT value FROM kv WHERE namespace = 'keys'")
    ]
    assert len(digests) >= len(keys) + 1
    for key in [*keys.values(), lines[-1]]:
        assert key_id(key) in listed.stdout
        assert secret(key) not in listed.stdout
    assert not any(d in listed.stdout for d in digests)
    assert "gsk_" not in listed.stdout
    revoked_row = next(r for r in listed.stdout.splitlines() if key_id(keys["revoked"]) in r)
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", revoked_row)) == 2, revoked_row
    bad = module_spawner.run("keys", "create", "--tenant", "x", "--scopes", "root", "--db", url)
    assert bad.returncode != 0 and "scopes" in bad.stderr and "Traceback" not in bad.stderr


def test_client_commands_send_the_api_key(
    module_spawner: Spawner, server: Server, keys: dict[str, str]
) -> None:
    env = {"GENSPOOL_API_URL": server.url}
    by_option = module_spawner.run(
        "submit", "hello key", "--model", "echo", "--wait", "--api-key", keys["a"], env=env
    )
    assert by_option.returncode == 0, by_option.stderr
    assert by_option.stdout == "hello key\n"
    by_env = module_spawner.run("jobs", "list", env={**env, "GENSPOOL_API_KEY": keys["a"]})
    assert by_env.returncode == 0, by_env.stderr
    assert "job_" in by_env.stdout
    dlq = module_spawner.run("dlq", "list", env={**env, "GENSPOOL_API_KEY": keys["a_read"]})
    assert dlq.returncode == 0, dlq.stderr
    without = module_spawner.run("jobs", "list", env=env)
    assert without.returncode != 0
    assert "401" in without.stderr and len(without.stderr.strip().splitlines()) == 1


# -- open mode and binding -------------------------------------------------------------------


def test_without_keys_the_api_is_open_on_loopback_until_a_first_key_is_made(
    spawner: Spawner,
) -> None:
    db = spawner.root / "open.db"
    server = spawner.server(MODELS, db=db, env=ENV)
    assert "auth: off" in server.proc.stdout()
    assert server.client.get("/v1/jobs").status_code == 200
    create_key(spawner, db, "ops", "admin")
    _wait(lambda: server.client.get("/v1/jobs").status_code == 401, "auth to turn on", 5)


def test_serve_refuses_a_public_host_while_no_key_exists(spawner: Spawner) -> None:
    for command in ("serve", "api"):
        result = spawner.run(
            command, "--host", "0.0.0.0", "--port", str(spawner.free_port()),
            "--db", spawner.sqlite_url(spawner.root / "nokeys.db"),
        )  # fmt: skip
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "0.0.0.0" in lines[0] and "no API key" in lines[0], lines[0]


def test_server_says_auth_is_on(server: Server) -> None:
    assert "auth: on" in server.proc.stdout()


# -- logs ------------------------------------------------------------------------------------


def test_logs_hold_no_key_and_no_prompt(server: Server, keys: dict[str, str]) -> None:
    """Runs last: every request above plus some that fail in every way, then a scan."""
    a = As(server, keys["a"])
    for prompt_model in ("echo", "doomed"):
        a.wait(a.chat(prompt_model, PROMPT)["id"])
    a.request(
        "POST", CHAT, json={"model": "echo", "messages": [{"role": "user", "content": PROMPT}]}
    )
    a.request("POST", CHAT, json={"model": "no-such-model", "messages": [{"content": PROMPT}]})
    a.request("POST", "/v1/jobs", content=b'{"url": "' + PROMPT.encode())  # malformed JSON
    As(server, keys["limited"]).chat("echo", PROMPT, expect=429)
    As(server, keys["a_read"]).chat("echo", PROMPT, expect=403)
    As(server, keys["revoked"]).chat("echo", PROMPT, expect=401)
    for key in (keys["a"], UNKNOWN_KEY, keys["revoked"]):
        with pytest.raises(InvalidStatus):
            connect(f"{server.ws_url}?token={key}x").close()
    with As(server, keys["a"]).ws(token_in_query=True) as ws:
        ws_first(ws, "job_ffffffffffffffffffffffff")
    time.sleep(0.5)
    logs = server.proc.stdout() + server.proc.stderr()
    assert "WebSocket /v1/ws" in logs  # the scan reads the lines that would hold a token
    for key in [*keys.values(), UNKNOWN_KEY]:
        assert secret(key) not in logs
    assert "Bearer gsk" not in logs and "token=gsk" not in logs
    assert "canary-prompt" not in logs
