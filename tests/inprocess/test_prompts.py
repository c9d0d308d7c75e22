"""The prompt registry in process: the API and a worker over a real SQLite file (two apps on
the same file stand for two processes). Checked: versions are immutable (409) and numbered
1, 2, ...; a label move is compare-and-set and reaches another process within its cache TTL;
a job pinned to a version keeps it (its rendered body and its recorded ``genspool.prompt``)
after the label moves; another tenant's prompt is 404 to read and to use; a missing variable
is a 400 naming it; every change is audited (who, when, from -> to); scopes are enforced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from genspool.core.models import PROMPT
from genspool.core.prompts import PROMPT as PROMPT_KEY
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, MODELS, As, Keys, assert_error, make_keys
from tests.helpers.api import key_id as id_of

GREETING = [
    {"role": "system", "content": "You are {{tone}}."},
    {"role": "user", "content": "Say hello to {{name}}."},
]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'prompts.db'}"


@pytest.fixture
async def gs(db_url: str) -> AsyncIterator[InProcess]:
    async with serve(MODELS, worker=True, url=db_url, key_cache_s=0.0) as running:
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def create(api: As, template: Any = None, **extra: Any) -> dict[str, Any]:
    body = {"id": "greet", "kind": "chat", "template": template or GREETING, **extra}
    r = await api.request("POST", "/v1/prompts", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def submit(api: As, prompt: Any, expect: int = 202) -> dict[str, Any]:
    body = {"url": CHAT, "body": {"model": "echo", "prompt": prompt}}
    r = await api.request("POST", "/v1/jobs", json=body)
    assert r.status_code == expect, r.text
    out: dict[str, Any] = r.json()
    return out


async def request_of(api: As, job_id: str) -> dict[str, Any]:
    r = await api.request("GET", f"/v1/jobs/{job_id}", params={"include": "request"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


VARS = {"tone": "terse", "name": "Ada"}


async def test_versions_are_numbered_and_never_edited(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    v1 = await create(api)
    assert (v1["version"], v1["variables"], v1["labels"]) == (1, ["name", "tone"], ["latest"])
    v2 = await create(api, [{"role": "user", "content": "Hi {{name}}"}], labels=["production"])
    assert (v2["version"], sorted(v2["labels"])) == (2, ["latest", "production"])
    for method in ("PUT", "PATCH"):
        for path in ("/v1/prompts/greet/versions/1", "/v1/prompts/greet"):
            r = await api.request(method, path, json={"template": "changed"})
            assert "never edited" in assert_error(r, 409)
    r = await api.request("GET", "/v1/prompts/greet/versions/1")
    assert r.json()["template"] == GREETING
    r = await api.request("GET", "/v1/prompts/greet")
    assert r.json()["version"] == 2
    r = await api.request("GET", "/v1/prompts/greet", params={"label": "production"})
    assert r.json()["version"] == 2
    r = await api.request("GET", "/v1/prompts/greet/versions")
    assert [v["version"] for v in r.json()["data"]] == [2, 1]
    r = await api.request("GET", "/v1/prompts")
    assert [(p["id"], p["version"]) for p in r.json()["data"]] == [("greet", 2)]


async def test_bad_prompts_are_400_naming_the_field(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    cases = [
        ({"id": "bad id", "template": "x", "kind": "text"}, "id"),
        ({"id": "p", "template": "{{ oops", "kind": "text"}, "template"),
        ({"id": "p", "template": [{"role": "robot", "content": "x"}]}, "template[0].role"),
        ({"id": "p", "template": "x", "kind": "poem"}, "kind"),
    ]
    for body, param in cases:
        r = await api.request("POST", "/v1/prompts", json=body)
        assert_error(r, 400)
        assert r.json()["error"]["param"] == param, r.text


async def test_a_job_renders_its_prompt_and_records_the_version(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    await create(api)
    job = await submit(api, {"id": "greet", "variables": VARS})
    assert job["metadata"][PROMPT] == {"id": "greet", "version": 1}
    body = (await request_of(api, job["id"]))["request"]["body"]
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to Ada."},
    ]
    assert "prompt" not in body
    assert (await api.wait(job["id"])).status.value == "succeeded"
    # A text prompt is one user message, before the request's own messages; "id@N" pins N.
    text = {"id": "note", "kind": "text", "template": "Summarise: {{doc}}"}
    assert (await api.request("POST", "/v1/prompts", json=text)).status_code == 201
    r = await api.request("POST", "/v1/jobs", json={"url": CHAT, "body": {
        "model": "echo", "prompt": {"id": "note@1", "variables": {"doc": "abc"}},
        "messages": [{"role": "user", "content": "and be brief"}]}})  # fmt: skip
    assert r.status_code == 202, r.text
    body = (await request_of(api, r.json()["id"]))["request"]["body"]
    assert [m["content"] for m in body["messages"]] == ["Summarise: abc", "and be brief"]
    # A client cannot set the reserved key itself.
    r = await api.request("POST", "/v1/jobs", json={
        "url": CHAT, "body": {"model": "echo", "messages": [{"role": "user", "content": "x"}]},
        "metadata": {PROMPT_KEY: {"id": "forged", "version": 9}}})  # fmt: skip
    assert PROMPT_KEY not in r.json()["metadata"]


async def test_chat_completions_take_openai_prompt_shape(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    await create(api)
    body = {"model": "echo", "prompt": {"id": "greet", "version": "1", "variables": VARS}}
    r = await api.request("POST", "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


async def test_a_missing_variable_is_400_naming_it(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    await create(api)
    r = await api.request("POST", "/v1/jobs", json={"url": CHAT, "body": {
        "model": "echo", "prompt": {"id": "greet", "variables": {"tone": "kind"}}}})  # fmt: skip
    assert "'name'" in assert_error(r, 400)
    assert r.json()["error"]["param"] == "prompt.variables.name"
    r = await api.request("POST", "/v1/chat/completions", json={
        "model": "echo", "prompt": "greet@production"})  # fmt: skip
    assert "no label 'production'" in assert_error(r, 404)
    bad = {"id": "greet", "variables": {"tone": ["x"], "name": "n"}}
    r = await api.request("POST", "/v1/jobs", json={"url": CHAT, "body": {
        "model": "echo", "prompt": bad}})  # fmt: skip
    assert r.json()["error"]["param"] == "prompt.variables.tone"


async def test_another_tenants_prompt_is_404(gs: InProcess, keys: Keys) -> None:
    a, b = As(gs, keys.a), As(gs, keys.b)
    await create(a, labels=["production"])
    for path in ("/v1/prompts/greet", "/v1/prompts/greet/versions/1", "/v1/prompts/greet/versions",
                 "/v1/prompts/greet/labels", "/v1/prompts/greet/audit"):  # fmt: skip
        assert_error(await b.request("GET", path), 404)
    assert (await b.request("GET", "/v1/prompts")).json()["data"] == []
    r = await b.request("POST", "/v1/prompts/greet/labels/production", json={"version": 1})
    assert_error(r, 404)
    await submit(b, {"id": "greet@production", "variables": VARS}, expect=404)
    # b's own prompt of the same id is another prompt altogether.
    mine = await create(b, "Only {{x}}", kind="text")
    assert mine["version"] == 1
    r = await a.request("GET", "/v1/prompts/greet")
    assert r.json()["version"] == 1 and r.json()["kind"] == "chat"


async def test_scopes(gs: InProcess, keys: Keys) -> None:
    await create(As(gs, keys.a))
    reader, submitter = As(gs, keys.a_read), As(gs, keys.a_submit)
    body = {"id": "greet", "template": GREETING}
    assert_error(await reader.request("POST", "/v1/prompts", json=body), 403)
    assert_error(await submitter.request("GET", "/v1/prompts/greet"), 403)
    assert (await reader.request("GET", "/v1/prompts/greet")).status_code == 200
    assert (await submitter.request("POST", "/v1/prompts", json=body)).status_code == 201


async def test_label_moves_are_compare_and_set_and_audited(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    await create(api)
    await create(api)
    path = "/v1/prompts/greet/labels/production"
    r = await api.request("POST", path, json={"version": 1, "expected_version": 0})
    assert r.json()["moved"] and r.json()["revision"] == 1, r.text
    r = await api.request("POST", path, json={"version": 2, "expected_version": 2})
    assert "points at version 1" in assert_error(r, 409)
    r = await api.request("POST", path, json={"version": 2, "expected_version": 1})
    assert (r.json()["from_version"], r.json()["version"]) == (1, 2)
    assert_error(await api.request("POST", path, json={"version": 7}), 404)
    r = await api.request("POST", "/v1/prompts/greet/labels/latest", json={"version": 1})
    assert "cannot be moved" in assert_error(r, 400)
    labels = (await api.request("GET", "/v1/prompts/greet/labels")).json()["labels"]
    assert labels == {"production": 2, "latest": 2}
    audit = (await api.request("GET", "/v1/prompts/greet/audit")).json()["data"]
    moves = [(e["action"], e["label"], e["from_version"], e["to_version"]) for e in audit]
    assert moves == [
        ("version.created", "latest", None, 1),
        ("version.created", "latest", 1, 2),
        ("label.moved", "production", None, 1),
        ("label.moved", "production", 1, 2),
    ]
    assert {e["actor"] for e in audit} == {id_of(keys.a)}
    assert all(e["at"] > 0 for e in audit)


async def test_a_move_reaches_another_process_and_pinned_jobs_keep_their_version(
    gs: InProcess, keys: Keys, db_url: str
) -> None:
    """Two apps on one SQLite file, each with its own registry and caches (as two processes):
    a move made through one is used by the other within its label TTL; a job resolved before
    the move keeps version 1, its rendered body, and its record."""
    ttl = 0.5
    api = As(gs, keys.a)
    await create(api, labels=["production"])
    await create(api, [{"role": "user", "content": "v2 for {{name}}"}])
    async with serve(MODELS, url=db_url, key_cache_s=0.0, prompt_label_cache_s=ttl) as other:
        assert other.services.prompts is not gs.services.prompts
        there = As(other, keys.a)
        pinned = await submit(there, {"id": "greet@production", "variables": VARS})
        assert pinned["metadata"][PROMPT] == {"id": "greet", "version": 1}
        r = await api.request("POST", "/v1/prompts/greet/labels/production", json={"version": 2})
        assert r.json()["moved"], r.text
        moved_at = asyncio.get_running_loop().time()
        while True:  # the other process sees the move within its TTL
            job = await submit(there, {"id": "greet@production", "variables": VARS})
            if job["metadata"][PROMPT]["version"] == 2:
                break
            assert asyncio.get_running_loop().time() - moved_at < ttl + 0.5
            await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - moved_at <= ttl + 0.2
        body = (await request_of(there, job["id"]))["request"]["body"]
        assert body["messages"] == [{"role": "user", "content": "v2 for Ada"}]
    done = await api.wait(pinned["id"])
    assert done.status.value == "succeeded"
    assert done.metadata[PROMPT] == {"id": "greet", "version": 1}
    assert done.body["messages"][1]["content"] == "Say hello to Ada."
