"""``genspool fanout`` and ``genspool routes`` against a real server whose models file declares a
route; a models file with an invalid route pattern is refused at start with the pattern's path."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.helpers.processes import Server, Spawner

MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {"name": "other", "provider": "echo"},
]
ROUTE = {
    "name": "french",
    "pattern": {"lang": ["fr"], "size": [{"numeric": ["<", 100]}]},
    "targets": [
        {
            "name": "echo",
            "body": {"model": "echo", "messages": [{"role": "user", "content": "{{event.text}}"}]},
        },
        {
            "name": "other",
            "body": {
                "model": "other",
                "messages": [{"role": "user", "content": "fr: {{event.text}}"}],
            },
        },
    ],
}


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    path = module_spawner.root / "fanout-models.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS, "routes": [ROUTE]}, sort_keys=False))
    return module_spawner.server(path)


@pytest.fixture
def cli(module_spawner: Spawner, server: Server) -> Any:
    def run(*args: str, timeout: float = 30) -> Any:
        return module_spawner.run(*args, env={"GENSPOOL_API_URL": server.url}, timeout=timeout)

    return run


def test_fanout_prints_every_branch_and_the_output(cli: Any) -> None:
    result = cli("fanout", "-m", "echo", "-m", "other", "bonjour")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"echo": "bonjour", "other": "bonjour"}
    assert re.search(r"job_[0-9a-f]+: queued", result.stderr), result.stderr
    assert "succeeded" in result.stderr  # the live table of branches


def test_fanout_by_event_runs_the_routes_targets(cli: Any) -> None:
    event = json.dumps({"lang": "fr", "size": 3, "text": "salut"})
    result = cli("fanout", "--event", event, "--json-out")
    assert result.returncode == 0, result.stderr
    parent = json.loads(result.stdout)
    body = parent["result"]["body"]
    assert body["routes"] == ["french"]
    assert body["output"] == {"french.echo": "salut", "french.other": "fr: salut"}


def test_fanout_bad_input_is_one_line_and_non_zero(cli: Any) -> None:
    for args, words in (
        (("fanout", "hi"), "give a prompt and --model"),
        (("fanout", "--event", '{"lang": "en"}'), "matches no route"),
        (("fanout", "-m", "echo", "-m", "nope", "hi"), "nope"),
        (("fanout", "--json", "{not json"), "not valid JSON"),
        (("fanout", "-m", "echo", "-m", "other", "--aggregate", "best", "hi"), "--aggregate best"),
    ):
        result = cli(*args)
        assert result.returncode != 0, (args, result.stdout)
        assert "Traceback" not in result.stderr and words in result.stderr, (args, result.stderr)


def test_routes_list_and_test(cli: Any) -> None:
    listed = cli("routes", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["source"]) for r in json.loads(listed.stdout)] == [("french", "config")]
    pattern = json.dumps(ROUTE["pattern"])
    yes = cli("routes", "test", pattern, json.dumps({"lang": "fr", "size": 5}))
    assert (yes.returncode, yes.stdout.strip()) == (0, "match")
    no = cli("routes", "test", pattern, json.dumps({"lang": "fr", "size": 500}))
    assert (no.returncode, no.stdout.strip()) == (1, "no match")
    bad = cli("routes", "test", json.dumps({"lang": "fr"}), "{}")
    assert bad.returncode != 0 and "lang" in bad.stderr and "Traceback" not in bad.stderr


def test_a_route_of_the_models_file_cannot_be_replaced_through_the_api(server: Server) -> None:
    response = server.client.put(
        "/v1/routes/french", json={k: v for k, v in ROUTE.items() if k != "name"}
    )
    assert response.status_code == 409, response.text
    assert "models file" in response.json()["error"]["message"]


def test_an_invalid_route_in_the_models_file_is_refused_at_start(module_spawner: Spawner) -> None:
    path = module_spawner.root / "bad-route.yaml"
    bad = {**ROUTE, "pattern": {"detail": {"size": [{"prefix": 5}]}}}
    path.write_text(yaml.safe_dump({"models": MODELS, "routes": [bad]}, sort_keys=False))
    result = module_spawner.run("serve", "--config", str(path), "--port", "0", timeout=60)
    assert result.returncode != 0
    assert "routes[0].pattern" in result.stderr and "detail.size" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
