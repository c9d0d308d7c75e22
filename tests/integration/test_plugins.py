"""A third-party provider serves jobs without a line of genspool changed.

``tests/plugin_pkg`` is a package of its own (``genspool-test-plugin``) whose entry point in the
group ``genspool.providers`` registers ``reverse``: a model that answers with the last user
message reversed. It is installed (editable, no dependencies) into this venv when missing; then
real ``genspool`` processes find it by name, as they find the built-in providers.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import Spawner

PACKAGE = Path(__file__).parents[1] / "plugin_pkg"
PROMPT_TOKENS = "genspool.prompt_tokens"
REVERSE: dict[str, Any] = {
    "name": "backwards",
    "provider": "reverse",
    "context_window": 40,  # the plugin's card counts characters
    "options": {"suffix": "!"},
}


@pytest.fixture(scope="session")
def reverse_plugin() -> None:
    if not any(ep.name == "reverse" for ep in entry_points(group="genspool.providers")):
        # Built in isolation: the venv's own setuptools may be too old to build a wheel.
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet"]
        done = subprocess.run(
            [*pip, "-e", str(PACKAGE)], capture_output=True, text=True, check=False, timeout=240
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("reverse_plugin")
def test_a_plugin_provider_serves_jobs_found_by_its_entry_point(spawner: Spawner) -> None:
    server = spawner.server([REVERSE, {"name": "echo", "provider": "echo"}], db_url="memory://")
    job = server.chat("backwards", "hello plugin")
    done = server.wait(job["id"])
    assert done["status"] == "succeeded", done
    answer = done["result"]["body"]
    assert answer["choices"][0]["message"]["content"] == "nigulp olleh!"
    # Counted once, by the plugin's card in the API, and handed to the provider with the job.
    assert done["metadata"][PROMPT_TOKENS] == len("hello plugin")
    assert answer["usage"]["prompt_tokens"] == len("hello plugin")

    listed = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert listed["backwards"]["endpoints"] == ["/v1/chat/completions"]
    assert listed["backwards"]["provider"] == "reverse"


@pytest.mark.usefixtures("reverse_plugin")
def test_an_api_process_validates_plugin_models_by_their_card(spawner: Spawner) -> None:
    api = spawner.server([REVERSE], command="api", db_url="memory://")
    too_long = api.chat("backwards", "x" * 41, expect=400)
    assert "context window" in too_long["error"]["message"], too_long
    wrong = api.submit({"model": "backwards", "input": "x"}, url="/v1/embeddings", expect=400)
    assert "serves /v1/chat/completions" in wrong["error"]["message"], wrong
    forged = api.chat("backwards", "abc", metadata={PROMPT_TOKENS: 0, "mine": 1})
    # The API's own count wins, and it records the caller's scopes (an agent's tools check them).
    scopes = ["admin", "read", "submit"]
    assert forged["metadata"] == {PROMPT_TOKENS: 3, "mine": 1, "genspool.scopes": scopes}


def test_an_unknown_provider_lists_the_known_ones(spawner: Spawner) -> None:
    models = spawner.models([{"name": "x", "provider": "nope"}], "unknown.yaml")
    result = spawner.run("worker", "--config", str(models), "--db", "memory://")
    assert result.returncode != 0
    assert "models[0].provider: unknown provider 'nope'" in result.stderr, result.stderr
    assert "echo, llama_cpp, onnx_embedding, openai" in result.stderr, result.stderr
