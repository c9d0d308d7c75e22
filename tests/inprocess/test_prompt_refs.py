"""Stored prompts named by batch lines and by pipeline steps, in process over a real SQLite file
(the API, the batch and pipeline runners and a worker in one event loop, echo models).

Batches: a line's body names a prompt as a job's does (``{id, version?, variables}`` or
``id@label``); each label is pinned when the runner checks the file, kept on the batch record,
and every line uses that version even when the label moves after the first line became a job;
each job records the version it used; an unknown prompt, a missing variable or a missing label
fails the batch with an error naming each line. Pipelines: a model step's ``prompt: {id,
label, variables}`` is rendered per item with its variables templated from the item, its version
pinned on the run and recorded on every job; a prompt that does not exist, or variables that do
not match the prompt's, fail the run at its start naming the pipeline and the step; a malformed
reference is refused when the file is loaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from genspool.batches.output import line_job_id
from genspool.core.job import Job
from genspool.core.models import PROMPT
from genspool.exceptions import ConfigError
from genspool.pipelines.spec import load_pipelines
from genspool.pipelines.steps import step_job_id
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, MODELS, As, Keys, make_keys

GREETING = [
    {"role": "system", "content": "You are {{tone}}."},
    {"role": "user", "content": "Say hello to {{name}}."},
]
V2 = [{"role": "user", "content": "v2: hi {{name}}, {{tone}}"}]
VARS = {"tone": "terse", "name": "Ada"}
STEP_PROMPT: dict[str, Any] = {"id": "greet", "label": "production",
               "variables": {"tone": "kind", "name": "{{item.name}}"}}  # fmt: skip
PEOPLE = [{"id": "p1", "name": "Ada"}, {"id": "p2", "name": "Alan"}, {"id": "p3", "name": "Grace"}]


def _pipeline(name: str, prompt: Any, **step: Any) -> dict[str, Any]:
    return {
        "name": name, "source": {"items": PEOPLE}, "key": "{{item.id}}",
        "steps": [{"id": "hello", "model": "echo", "prompt": prompt, **step}],
        "sink": [{"jsonl": {"fields": {"id": "{{item.id}}", "said": "{{steps.hello}}"}}}],
    }  # fmt: skip


def _pipelines(tmp: Path) -> dict[str, Any]:
    docs = [
        _pipeline("hello", STEP_PROMPT),
        _pipeline("pinned", {"id": "greet@1", "variables": {"tone": "x", "name": "{{item.name}}"}}),
        _pipeline("nowhere", {"id": "absent", "variables": {"x": "{{item.name}}"}}),
        _pipeline("extra", {**STEP_PROMPT, "variables": {**STEP_PROMPT["variables"], "mood": "y"}}),
        _pipeline("short", {**STEP_PROMPT, "variables": {"name": "{{item.name}}"}}),
    ]
    return load_pipelines(docs, "test", tmp)


@pytest.fixture
async def gs(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with serve(
        MODELS, worker=True, url=f"sqlite:///{tmp_path / 'refs.db'}", key_cache_s=0.0,
        pipelines=_pipelines(tmp_path),
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def create(api: As, template: Any, labels: list[str] | None = None) -> int:
    body = {"id": "greet", "kind": "chat", "template": template, "labels": labels or []}
    r = await api.request("POST", "/v1/prompts", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["version"])


# -- batches -------------------------------------------------------------------------------------


def jsonl(prompts: list[Any]) -> bytes:
    lines = [
        {"custom_id": f"c{n}", "method": "POST", "url": CHAT,
         "body": {"model": "echo", "prompt": prompt}}
        for n, prompt in enumerate(prompts, 1)
    ]  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def start_batch(api: As, data: bytes) -> str:
    up = await api.request(
        "POST", "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
    )
    assert up.status_code == 200, up.text
    body = {"input_file_id": up.json()["id"], "endpoint": CHAT, "completion_window": "1h"}
    r = await api.request("POST", "/v1/batches", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def batch_ended(api: As, batch_id: str, timeout: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            r = await api.request("GET", f"/v1/batches/{batch_id}")
            if r.json()["status"] in ("completed", "failed", "cancelled", "expired"):
                return dict(r.json())
            await asyncio.sleep(0.05)


class MovesLabelAfterFirstLine:
    """A spy over the real queue (every call goes through to it): once the batch's first chunk
    of lines has become jobs, it moves the label, before the next chunk is enqueued. The
    runner gives no other way to act between two chunks."""

    def __init__(self, queue: Any, move: Callable[[], Awaitable[None]]) -> None:
        self._queue, self._move, self.moved = queue, move, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def submit_many(self, jobs: list[Job]) -> Any:
        out = await self._queue.submit_many(jobs)
        if not self.moved:
            self.moved = True
            await self._move()
        return out


async def test_batch_lines_use_the_version_pinned_when_checked(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    assert await create(api, GREETING, ["production"]) == 1
    assert await create(api, V2) == 2
    registry, batches = gs.services.prompts, gs.services.batches
    assert registry is not None and batches is not None

    async def move() -> None:
        await registry.move_label("acme", "greet", "production", 2, actor="test")

    runner = batches.runner
    runner.ENQUEUE_CHUNK = 1  # one line per chunk: the label moves between line 1 and line 2
    spy = MovesLabelAfterFirstLine(runner.queue, move)
    runner.queue = spy  # type: ignore[assignment]
    data = jsonl([
        {"id": "greet", "variables": VARS},  # no label: production (set), pinned
        {"id": "greet@production", "variables": VARS},  # enqueued after the move
        {"id": "greet", "version": 2, "variables": VARS},  # a version: no pin needed
    ])  # fmt: skip
    batch_id = await start_batch(api, data)
    done = await batch_ended(api, batch_id)
    assert done["status"] == "completed", done
    assert spy.moved
    assert (await registry.by_label("acme", "greet", "production", fresh=True)).version == 2
    record = await batches.get(batch_id, "acme")
    assert record.prompts == {"greet@": 1, "greet@production": 1}
    jobs = {j.id: j for j in await gs.queue.get_many([line_job_id(batch_id, n) for n in (1, 2, 3)])}
    used = [jobs[line_job_id(batch_id, n)].metadata[PROMPT] for n in (1, 2, 3)]
    assert used == [{"id": "greet", "version": v} for v in (1, 1, 2)]
    said = [jobs[line_job_id(batch_id, n)].body["messages"] for n in (1, 2, 3)]
    assert (
        said[0]
        == said[1]
        == [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to Ada."},
        ]
    )
    assert said[2] == [{"role": "user", "content": "v2: hi Ada, terse"}]
    out = await api.request("GET", f"/v1/files/{done['output_file_id']}/content")
    answers = {
        row["custom_id"]: row["response"]["body"]["choices"][0]["message"]["content"]
        for row in map(orjson.loads, out.content.splitlines())
    }
    assert answers == {"c1": "Say hello to Ada.", "c2": "Say hello to Ada.",
                       "c3": "v2: hi Ada, terse"}  # fmt: skip


async def test_bad_prompt_references_fail_the_batch_naming_each_line(
    gs: InProcess, keys: Keys
) -> None:
    api = As(gs, keys.a)
    await create(api, GREETING)
    other = As(gs, keys.b)
    theirs = {"id": "theirs", "kind": "text", "template": "x"}
    r = await other.request("POST", "/v1/prompts", json=theirs)
    assert r.status_code == 201, r.text
    data = jsonl([
        {"id": "greet", "variables": VARS},
        {"id": "nope", "variables": VARS},
        {"id": "greet", "variables": {"tone": "kind"}},
        "greet@staging",
        {"id": "theirs"},
        {"id": "greet", "variables": VARS, "colour": "red"},
    ])  # fmt: skip
    done = await batch_ended(api, await start_batch(api, data))
    assert done["status"] == "failed", done
    errors = done["errors"]["data"]
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 6]
    assert {e["code"] for e in errors} == {"invalid_request_error"}
    messages = [e["message"] for e in errors]
    assert messages[0] == "line 2: no prompt 'nope'"
    assert messages[1].startswith("line 3: prompt.variables: missing 'name'")
    assert errors[1]["param"] == "prompt.variables.name"
    assert messages[2] == "line 4: prompt 'greet' has no label 'staging'"
    assert messages[3] == "line 5: no prompt 'theirs'"  # another tenant's: not found
    assert messages[4] == "line 6: prompt.colour: unknown field"
    assert not await gs.queue.get_many([line_job_id(done["id"], 1)])  # no line ran


# -- pipelines -----------------------------------------------------------------------------------


async def run_ended(api: As, name: str, timeout: float = 20) -> dict[str, Any]:
    r = await api.request("POST", f"/v1/pipelines/{name}/runs", json={})
    assert r.status_code == 202, r.text
    async with asyncio.timeout(timeout):
        while True:
            got = await api.request("GET", f"/v1/pipelines/{name}/runs/{r.json()['id']}")
            if got.json()["status"] in ("completed", "failed", "cancelled"):
                return dict(got.json())
            await asyncio.sleep(0.05)


async def test_a_pipeline_step_renders_its_stored_prompt_per_item(
    gs: InProcess, keys: Keys
) -> None:
    api = As(gs, keys.a)
    await create(api, GREETING, ["production"])
    await create(api, V2)
    run = await run_ended(api, "hello")
    assert run["status"] == "completed", run
    assert run["prompts"] == {"hello": {"id": "greet", "version": 1}}
    out = await api.request("GET", f"/v1/files/{run['output_file_ids'][0]}/content")
    rows = [orjson.loads(x) for x in out.content.splitlines()]
    assert rows == [{"id": p["id"], "said": f"Say hello to {p['name']}."} for p in PEOPLE]
    ids = [step_job_id(run["id"], seq, "hello") for seq in (1, 2, 3)]
    jobs = await gs.queue.get_many(ids)
    assert [j.metadata[PROMPT] for j in jobs] == [{"id": "greet", "version": 1}] * 3
    assert jobs[0].body["messages"][0] == {"role": "system", "content": "You are kind."}
    # The label moves: the next run pins the version it points at now.
    r = await api.request("POST", "/v1/prompts/greet/labels/production", json={"version": 2})
    assert r.json()["moved"], r.text
    again = await run_ended(api, "hello")
    assert again["prompts"] == {"hello": {"id": "greet", "version": 2}}
    # A pinned version ("greet@1") stays whatever the labels do.
    pinned = await run_ended(api, "pinned")
    assert pinned["status"] == "completed" and pinned["prompts"]["hello"]["version"] == 1


async def test_a_prompt_a_run_cannot_use_fails_it_at_the_start(gs: InProcess, keys: Keys) -> None:
    api = As(gs, keys.a)
    await create(api, GREETING, ["production"])
    cases = {
        "nowhere": "pipeline 'nowhere', step 'hello': no prompt 'absent'",
        "extra": "pipeline 'extra', step 'hello': variables.mood: prompt 'greet' version 1 does"
        " not declare 'mood' (it takes name, tone)",
        "short": "pipeline 'short', step 'hello': variables: prompt 'greet' version 1 needs"
        " 'tone' (it takes name, tone)",
    }
    for name, why in cases.items():
        run = await run_ended(api, name)
        assert run["status"] == "failed", run
        assert run["error"] == {"code": "invalid_prompt", "message": why}
        assert run["counts"]["read"] == 0  # no item was read, no model called
    # Another tenant's runs do not see acme's prompt.
    run = await run_ended(As(gs, keys.b), "hello")
    assert run["error"]["message"] == "pipeline 'hello', step 'hello': no prompt 'greet'"


@pytest.mark.parametrize(
    ("prompt", "step", "error"),
    [
        ({"id": "greet", "version": 1, "label": "production"}, {}, "a version or a label"),
        ({"id": "greet@production", "label": "x"}, {}, "a version or a label"),
        ({"id": "bad id"}, {}, "prompt.id: 'bad id' must be"),
        ({"id": "greet", "variables": {"x": "{{nothing.here}}"}}, {}, "{{nothing.here}} names"),
        ({"id": "greet"}, {"system": "be kind"}, "brings its own messages"),
        ({"id": "greet"}, {"endpoint": "/v1/embeddings"}, "a stored prompt makes the messages"),
        ({"id": "greet", "vars": {}}, {}, "vars"),
    ],
)
def test_a_malformed_reference_is_refused_at_load(
    tmp_path: Path, prompt: Any, step: dict[str, Any], error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_pipelines([_pipeline("p", prompt, **step)], "test", tmp_path)
    assert error in str(caught.value)
    assert "steps[0] (hello)" in str(caught.value)
