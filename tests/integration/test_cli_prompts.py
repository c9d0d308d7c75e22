"""``genspool prompts`` against a real ``genspool serve`` (API and worker on a SQLite file, echo
models, API keys made by the real ``genspool keys`` CLI), and ``client.prompts`` of the blocking
and the asyncio clients against the same server.

Checked: ``create`` from ``--text`` and from ``--file`` (text, or ``--chat`` with a JSON list of
messages or one user message), with ``--label``; ``get`` of the latest, a ``--version`` and a
``--label`` (and ``--json``); ``label`` (a move, printed from -> to; a repeat that moves
nothing; ``--expect``); ``history`` (every change, the key that made it); ``list``; bad input
and the server's 4xx as one line on stderr and a non-zero exit. The clients create, read, move
labels (a compare-and-set that lost is a ``Conflict``), page through lists and the audit, see
no other tenant's prompt, and submit a job that names a prompt, whose version it records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genspool.client import AsyncClient, Client
from genspool.exceptions import Conflict, InvalidRequest, NotFound
from tests.helpers.processes import Server, Spawner
from tests.integration.test_cli import one_line_error
from tests.integration.test_files_api import create_key

MODELS: list[dict[str, Any]] = [{"name": "echo", "provider": "echo"}]
CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are {{tone}}."},
    {"role": "user", "content": "Say hello to {{name}}."},
]


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "prompts.db"
    return path


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    return {
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "a_read": create_key(module_spawner, db, "acme", "read"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
        "c": create_key(module_spawner, db, "gamma", "submit,read"),
    }


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, keys: dict[str, str]) -> Server:
    return module_spawner.server(MODELS, db=db)


@pytest.fixture
def cli(module_spawner: Spawner, server: Server, keys: dict[str, str]) -> Any:
    def run(*args: str, key: str = "a") -> Any:
        env = {"GENSPOOL_API_URL": server.url, "GENSPOOL_API_KEY": keys[key]}
        return module_spawner.run("prompts", *args, env=env)

    return run


def ok(result: Any) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def key_id(key: str) -> str:
    return key.split("_")[1]


# -- the CLI -------------------------------------------------------------------------------------


def test_create_get_label_history_and_list(
    cli: Any, module_spawner: Spawner, keys: dict[str, str]
) -> None:
    assert ok(cli("create", "greet", "--text", "Hello {{name}}")).strip() == (
        "greet version 1 (latest)"
    )
    chat = module_spawner.root / "greet.json"
    chat.write_text(json.dumps(MESSAGES))
    made = cli("create", "greet", "--file", str(chat), "--chat", "--label", "production",
               "--description", "the second")  # fmt: skip
    assert ok(made).strip() == "greet version 2 (latest, production)"
    assert ok(cli("create", "note", "--text", "Summarise {{doc}}", "--chat")).startswith(
        "note version 1"
    )

    latest = ok(cli("get", "greet"))
    for words in ("version     2", "kind        chat", "labels      latest, production",
                  "variables   name, tone", "the second", "[system] You are {{tone}}.",
                  "[user] Say hello to {{name}}.", key_id(keys["a"])):  # fmt: skip
        assert words in latest, (words, latest)
    first = ok(cli("get", "greet", "--version", "1"))
    assert "kind        text" in first and first.rstrip().endswith("Hello {{name}}")
    assert json.loads(ok(cli("get", "greet", "--label", "production", "--json")))["version"] == 2
    note = json.loads(ok(cli("get", "note", "--json")))
    assert note["template"] == [{"role": "user", "content": "Summarise {{doc}}"}]

    assert ok(cli("label", "greet", "production", "1")).strip() == "greet: production 2 -> 1"
    again = ok(cli("label", "greet", "production", "1"))
    assert again.strip() == "greet: production already points at version 1"
    assert ok(cli("label", "greet", "staging", "2", "--expect", "0")).strip() == (
        "greet: staging (not set) -> 2"
    )

    history = json.loads(ok(cli("history", "greet", "--json")))["data"]
    moves = [(h["action"], h["label"], h["from_version"], h["to_version"]) for h in history]
    assert moves == [
        ("version.created", "latest", None, 1),
        ("version.created", "latest", 1, 2),
        ("label.moved", "production", None, 2),
        ("label.moved", "production", 2, 1),
        ("label.moved", "staging", None, 2),
    ]
    assert {h["actor"] for h in history} == {key_id(keys["a"])}
    table = ok(cli("history", "greet"))
    assert "label.moved" in table and "2 -> 1" in table

    listed = ok(cli("list"))
    assert "greet" in listed and "note" in listed and "name, tone" in listed
    ids = [p["id"] for p in json.loads(ok(cli("list", "--json")))["data"]]
    assert ids == ["greet", "note"]
    assert json.loads(ok(cli("list", "--json", key="b")))["data"] == []  # another tenant's


def test_bad_input_and_server_errors_are_one_line(cli: Any, module_spawner: Spawner) -> None:
    one_line_error(cli("get", "nope"), "HTTP 404", "no prompt 'nope'")
    one_line_error(cli("create", "x"), "--file F or --text T")
    one_line_error(cli("create", "x", "--text", "a", "--file", "f"), "--file F or --text T")
    one_line_error(cli("create", "x", "--file", "missing.txt"), "--file missing.txt", "cannot")
    one_line_error(cli("create", "x", "--chat", "--text", "[oops"), "--text: not a JSON list")
    one_line_error(cli("create", "x", "--chat", "--text", '[{"role": "robot", "content": "a"}]'),
                   "HTTP 400", "template[0].role")  # fmt: skip
    one_line_error(cli("create", "x", "--text", "{{ oops"), "HTTP 400", "not a valid template")
    one_line_error(cli("create", "bad id", "--text", "a"), "HTTP 400", "'bad id'")
    one_line_error(cli("get", "x", "--version", "1", "--label", "a"), "--version or --label")
    one_line_error(cli("get", "x", "--version", "0"), "--version 0")
    ok(cli("create", "solo", "--text", "only {{x}}"))
    one_line_error(cli("label", "solo", "production", "9"), "HTTP 404", "has no version 9")
    one_line_error(cli("label", "solo", "latest", "1"), "HTTP 400", "cannot be moved")
    one_line_error(cli("label", "solo", "prod", "1", "--expect", "3"), "HTTP 409", "not 3")
    one_line_error(cli("history", "solo", key="b"), "HTTP 404", "no prompt 'solo'")
    one_line_error(cli("create", "solo", "--text", "a", key="a_read"), "HTTP 403")
    assert "version     1" in ok(cli("get", "solo", key="a_read"))


# -- the clients ---------------------------------------------------------------------------------


@pytest.fixture
def client(server: Server, keys: dict[str, str]) -> Iterator[Client]:
    with Client(server.url, keys["b"]) as c:
        yield c


def test_the_client_manages_prompts_and_jobs_use_them(client: Client, keys: dict[str, str]) -> None:
    made = client.prompts.create("c-greet", MESSAGES, labels=["production"], description="hi")
    assert (made.id, made.version, made.kind) == ("c-greet", 1, "chat")
    assert made.variables == ("name", "tone") and set(made.labels) == {"latest", "production"}
    text = client.prompts.create("c-greet", "v2 {{name}} {{tone}}")
    assert (text.version, text.kind, text.template) == (2, "text", "v2 {{name}} {{tone}}")
    assert client.prompts.get("c-greet").version == 2
    assert client.prompts.get("c-greet", version=1).template == MESSAGES
    assert client.prompts.get("c-greet", label="production").version == 1

    moved = client.prompts.set_label("c-greet", "production", 2, expected_version=1)
    assert (moved.from_version, moved.version, moved.moved) == (1, 2, True)
    with pytest.raises(Conflict):
        client.prompts.set_label("c-greet", "production", 1, expected_version=1)
    assert client.prompts.labels("c-greet") == {"production": 2, "latest": 2}
    history = list(client.prompts.history("c-greet", limit=1))  # one change a page
    assert [(h.action, h.from_version, h.to_version) for h in history] == [
        ("version.created", None, 1), ("label.moved", None, 1),
        ("version.created", 1, 2), ("label.moved", 1, 2),
    ]  # fmt: skip
    assert {h.actor for h in history} == {key_id(keys["b"])}

    for name in ("c-a", "c-b"):
        client.prompts.create(name, "{{x}}")
    assert [p.id for p in client.prompts.list(limit=1)] == ["c-a", "c-b", "c-greet"]

    job = client.submit(CHAT, {"model": "echo", "prompt": {
        "id": "c-greet", "version": 1, "variables": {"tone": "kind", "name": "Ada"}}})  # fmt: skip
    assert job.metadata["genspool.prompt"] == {"id": "c-greet", "version": 1}
    done = client.wait(job.id, timeout=30)
    assert done.status == "succeeded" and done.result is not None
    assert done.result.text == "Say hello to Ada."
    by_label = client.submit(CHAT, {"model": "echo", "prompt": {
        "id": "c-greet@production", "variables": {"tone": "kind", "name": "Ada"}},
        "messages": [{"role": "user", "content": "and you?"}]})  # fmt: skip
    assert by_label.metadata["genspool.prompt"] == {"id": "c-greet", "version": 2}
    request = client.get(by_label.id).request
    assert request is not None and [m["content"] for m in request.body["messages"]] == [
        "v2 Ada kind",
        "and you?",
    ]
    with pytest.raises(InvalidRequest, match="missing 'name'"):
        client.submit(CHAT, {"model": "echo", "prompt": {"id": "c-greet", "variables": {}}})


def test_another_tenants_prompt_is_not_found(server: Server, keys: dict[str, str]) -> None:
    with Client(server.url, keys["c"]) as other:
        with pytest.raises(NotFound):
            other.prompts.get("c-greet")
        with pytest.raises(NotFound):
            other.prompts.set_label("c-greet", "production", 1)
        assert list(other.prompts.list()) == []


async def test_the_async_client_manages_prompts(server: Server, keys: dict[str, str]) -> None:
    async with AsyncClient(server.url, keys["c"]) as client:
        made = await client.prompts.create("a-note", "Summarise {{doc}}", labels=["production"])
        assert (made.version, made.kind, made.variables) == (1, "text", ("doc",))
        second = await client.prompts.create("a-note", [{"role": "user", "content": "{{doc}}!"}])
        assert (second.version, second.kind) == (2, "chat")
        assert (await client.prompts.get("a-note", label="production")).version == 1
        moved = await client.prompts.set_label("a-note", "production", 2)
        assert moved.moved and moved.from_version == 1
        assert (await client.prompts.labels("a-note"))["production"] == 2
        assert [p.id async for p in client.prompts.list()] == ["a-note"]
        changes = [c.action async for c in client.prompts.history("a-note", limit=2)]
        assert changes == ["version.created", "label.moved", "version.created", "label.moved"]
        with pytest.raises(NotFound):
            await client.prompts.get("a-note", version=3)
