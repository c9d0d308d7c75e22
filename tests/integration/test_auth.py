"""API keys across processes: keys made and revoked with the real ``genspool keys`` CLI on a
SQLite file while a real ``genspool serve`` process uses it, the client commands, open mode on
loopback, and logs that hold no secret. The auth matrix, tenants and rate limits run in process
(tests/inprocess/). Echo models (named as such: they compute nothing) stand in for
real ones; ``doomed`` always times out, which is a real way to reach the dead-letter queue.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers.api import DOOMED_AT_ONCE, slow_model
from tests.helpers.processes import Server, Spawner

CHAT = "/v1/chat/completions"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    slow_model(800),
    DOOMED_AT_ONCE,
]
ENV = {"GENSPOOL_KEY_CACHE_S": "1", "GENSPOOL_RETRY_BASE_S": "0.05"}
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


def ws_first(ws: ClientConnection, job_id: str) -> dict[str, Any]:
    ws.send(json.dumps({"subscribe": [job_id]}))
    event: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return event


# -- every route: 401, 403, public ----------------------------------------------------------


# -- tenants ---------------------------------------------------------------------------------


# -- rate limit, revocation, key management ----------------------------------------------------


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
    limited = As(server, keys["limited"])
    for _ in range(3):  # its whole budget of 3 per minute, then a refusal
        limited.request("POST", "/v1/jobs", json={"url": CHAT, "body": {}})
    limited.chat("echo", PROMPT, expect=429)
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
