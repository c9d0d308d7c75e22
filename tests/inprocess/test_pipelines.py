"""Pipelines through the API in one process (memory store, echo models): runs with model,
filter and transform steps, sinks, re-runs that skip finished items, per-item errors, cancel,
tenant scoping and the errors a caller gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from genspool.pipelines.spec import load_pipelines
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth


def _pipelines(tmp: Path, items: list[Any], **extra: Any) -> dict[str, Any]:
    doc = {
        "name": "shouts",
        "inputs": {"suffix": {"default": "!"}},
        "source": {"items": items},
        "key": "{{item.id}}",
        "steps": [
            {"id": "echo", "model": "echo", "prompt": "{{item.text}}{{inputs.suffix}}"},
            {"id": "loud", "needs": ["echo"], "transform": "tests.helpers.pipeline_fns:shout"},
            {
                "id": "not_skip",
                "needs": ["echo"],
                "filter": {"item": {"text": [{"anything-but": "skip"}]}},
            },
            {
                "id": "check",
                "needs": ["not_skip"],
                "transform": "tests.helpers.pipeline_fns:broken",
            },
        ],
        "sink": [{"jsonl": None, "fields": {"id": "{{item.id}}", "loud": "{{steps.loud}}"}}],
        **extra,
    }
    return load_pipelines([doc], "test", tmp)


ITEMS = [{"id": f"r{i}", "text": f"review {i}"} for i in range(20)]


@pytest.fixture
async def gs(tmp_path: Path) -> AsyncIterator[InProcess]:
    items = [*ITEMS, {"id": "s", "text": "skip"}, {"id": "b", "text": "bad"}]
    async with serve(
        MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0,
        pipelines=_pipelines(tmp_path, items),
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def _finished(gs: InProcess, key: str, run_id: str, timeout: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            r = await gs.client.get(f"/v1/pipelines/shouts/runs/{run_id}", headers=auth(key))
            assert r.status_code == 200, r.text
            if r.json()["status"] in ("completed", "failed", "cancelled"):
                return dict(r.json())
            await asyncio.sleep(0.05)


async def _content(gs: InProcess, key: str, file_id: str) -> bytes:
    r = await gs.client.get(f"/v1/files/{file_id}/content", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.content


async def test_a_run_takes_every_item_through_its_steps_to_the_sinks(
    gs: InProcess, keys: Keys
) -> None:
    r = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
    assert r.status_code == 202, r.text
    run = await _finished(gs, keys.a, r.json()["id"])
    assert run["status"] == "completed", run
    assert run["counts"] == {
        "total": 22, "read": 22, "succeeded": 20, "failed": 1, "skipped": 1, "pending": 0,
    }  # fmt: skip
    out, errors = run["output_file_ids"], run["error_file_id"]
    lines = [orjson.loads(x) for x in (await _content(gs, keys.a, out[0])).splitlines()]
    assert lines == [{"id": f"r{i}", "loud": f"REVIEW {i}!"} for i in range(20)]
    failed = [orjson.loads(x) for x in (await _content(gs, keys.a, errors)).splitlines()]
    assert [f["key"] for f in failed] == ["b"]
    assert failed[0]["error"]["step"] == "check"
    assert "cannot shout at this" in failed[0]["error"]["message"]
    assert run["usage"]["prompt_tokens"] >= 22
    items = await gs.client.get(
        f"/v1/pipelines/shouts/runs/{run['id']}/items?status=skipped", headers=auth(keys.a)
    )
    assert [i["key"] for i in items.json()["data"]] == ["s"]


async def test_a_rerun_skips_what_an_earlier_run_finished_unless_forced(
    gs: InProcess, keys: Keys
) -> None:
    first = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
    await _finished(gs, keys.a, first.json()["id"])
    jobs_before = len(
        (await gs.client.get("/v1/jobs?limit=200", headers=auth(keys.a))).json()["data"]
    )
    again = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
    run = await _finished(gs, keys.a, again.json()["id"])
    # 20 done and 1 filtered are finished; the failed one is tried again (and fails again).
    assert run["counts"]["skipped"] == 21 and run["counts"]["failed"] == 1
    jobs_after = len(
        (await gs.client.get("/v1/jobs?limit=200", headers=auth(keys.a))).json()["data"]
    )
    assert jobs_after - jobs_before == 1  # only the failed item's model call ran again
    # The sinks still hold every finished item, with the outputs of the run that made them.
    lines = [
        orjson.loads(x)
        for x in (await _content(gs, keys.a, run["output_file_ids"][0])).splitlines()
    ]
    assert lines == [{"id": f"r{i}", "loud": f"REVIEW {i}!"} for i in range(20)]
    skipped = await gs.client.get(
        f"/v1/pipelines/shouts/runs/{run['id']}/items?status=skipped", headers=auth(keys.a)
    )
    reused = skipped.json()["data"][0]
    assert reused["error"]["code"] == "finished_earlier"
    assert reused["error"]["run_id"] == first.json()["id"]
    forced = await gs.client.post(
        "/v1/pipelines/shouts/runs", json={"force": True}, headers=auth(keys.a)
    )
    run = await _finished(gs, keys.a, forced.json()["id"])
    assert run["counts"]["succeeded"] == 20


async def test_an_idempotency_key_gives_the_same_run(gs: InProcess, keys: Keys) -> None:
    body = {"idempotency_key": "weekly-48", "inputs": {"suffix": "?"}}
    one = await gs.client.post("/v1/pipelines/shouts/runs", json=body, headers=auth(keys.a))
    two = await gs.client.post("/v1/pipelines/shouts/runs", json=body, headers=auth(keys.a))
    assert one.status_code == 202 and two.status_code == 200
    assert one.json()["id"] == two.json()["id"]


async def test_another_tenants_run_is_404_everywhere(gs: InProcess, keys: Keys) -> None:
    made = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
    run_id = made.json()["id"]
    for method, path in [
        ("GET", f"/v1/pipelines/shouts/runs/{run_id}"),
        ("GET", f"/v1/pipelines/shouts/runs/{run_id}/items"),
        ("GET", f"/v1/pipelines/shouts/runs/{run_id}/events"),
        ("POST", f"/v1/pipelines/shouts/runs/{run_id}/cancel"),
    ]:
        r = await gs.client.request(method, path, headers=auth(keys.b))
        assert r.status_code == 404, (path, r.text)
    listed = await gs.client.get("/v1/pipelines/shouts/runs", headers=auth(keys.b))
    assert listed.json()["data"] == []
    seen = await gs.client.get(f"/v1/pipelines/shouts/runs/{run_id}", headers=auth(keys.admin))
    assert seen.status_code == 200


async def test_bad_requests_say_what_is_wrong(gs: InProcess, keys: Keys) -> None:
    cases = [
        ("/v1/pipelines/nope/runs", {}, 404, "no pipeline 'nope'"),
        ("/v1/pipelines/shouts/runs", {"inputs": {"color": 1}}, 400, "unknown color"),
        ("/v1/pipelines/shouts/runs", {"inptus": {}}, 400, "body.inptus"),
        ("/v1/pipelines/shouts/runs", [], 400, "JSON object"),
    ]
    for path, body, status, words in cases:
        r = await gs.client.post(path, json=body, headers=auth(keys.a))
        assert r.status_code == status, (body, r.text)
        assert words in r.text, r.text
    r = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a_read))
    assert r.status_code == 403


async def test_cancel_keeps_the_finished_items(tmp_path: Path) -> None:
    slow = [{"name": "echo", "provider": "echo", "options": {"latency_ms": 100},
             "batching": {"max_batch_size": 1, "max_concurrency": 1}}]  # fmt: skip
    items = [{"id": f"r{i}", "text": f"t{i}"} for i in range(40)]
    pipes = load_pipelines([{
        "name": "shouts", "source": {"items": items}, "key": "{{item.id}}", "concurrency": 4,
        "steps": [{"id": "echo", "model": "echo", "prompt": "{{item.text}}"}],
        "sink": [{"jsonl": None}],
    }], "test", tmp_path)  # fmt: skip
    async with serve(slow, worker=True, retry=FAST_RETRY, key_cache_s=0.0, pipelines=pipes) as gs:
        keys = await make_keys(gs.services.keys)
        made = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
        run_id = made.json()["id"]
        async with asyncio.timeout(20):
            while True:
                r = await gs.client.get(f"/v1/pipelines/shouts/runs/{run_id}", headers=auth(keys.a))
                if r.json()["counts"]["succeeded"] >= 5:
                    break
                await asyncio.sleep(0.05)
        c = await gs.client.post(f"/v1/pipelines/shouts/runs/{run_id}/cancel", headers=auth(keys.a))
        assert c.status_code == 200 and c.json()["status"] == "cancelling"
        run = await _finished(gs, keys.a, run_id)
        assert run["status"] == "cancelled"
        done = run["counts"]["succeeded"]
        assert 5 <= done < 40
        out = (await _content(gs, keys.a, run["output_file_ids"][0])).splitlines()
        assert len(out) == done
        jobs = (await gs.client.get("/v1/jobs?limit=100", headers=auth(keys.a))).json()["data"]
        assert not [j for j in jobs if j["status"] in ("queued", "running")]


async def test_a_runs_events_follow_it_to_its_end(gs: InProcess, keys: Keys) -> None:
    made = await gs.client.post("/v1/pipelines/shouts/runs", json={}, headers=auth(keys.a))
    run_id = made.json()["id"]
    path = f"/v1/pipelines/shouts/runs/{run_id}/events"
    async with asyncio.timeout(20):
        r = await gs.client.get(path, headers=auth(keys.a))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    states = [
        orjson.loads(line.removeprefix("data: "))
        for line in r.text.splitlines()
        if line.startswith("data: ")
    ]
    assert r.text.count("event: run") == len(states) >= 2
    assert states[0]["id"] == run_id and states[-1]["status"] == "completed"
    seen = [s["counts"]["succeeded"] for s in states]
    assert seen == sorted(seen) and seen[-1] == 20


async def test_the_pipelines_are_listed_with_their_triggers_and_steps(
    gs: InProcess, keys: Keys
) -> None:
    r = await gs.client.get("/v1/pipelines", headers=auth(keys.a_read))
    assert r.status_code == 200
    (shouts,) = r.json()["data"]
    assert shouts["name"] == "shouts" and shouts["on"]["http"] is True
    assert [s["id"] for s in shouts["steps"]] == ["echo", "loud", "not_skip", "check"]
    assert shouts["sinks"] == ["jsonl"]
    ticks = await gs.client.get("/v1/pipelines/shouts/ticks", headers=auth(keys.a_read))
    assert ticks.json()["data"] == []


async def test_fanout_and_image_steps(tmp_path: Path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for n, color in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (64, 48), color).save(photos / f"p{n}.jpg", quality=90)
    pipes = load_pipelines([
        {
            "name": "both", "source": {"directory": "photos", "glob": "*.jpg", "text": False},
            "key": "{{item.name}}",
            "steps": [
                {"id": "fan", "fanout": {"branches": [
                    {"name": "one", "body": {"model": "echo", "messages": [
                        {"role": "user", "content": "{{item.name}} one"}]}},
                    {"name": "two", "body": {"model": "pager", "messages": [
                        {"role": "user", "content": "{{item.name}} two"}]}},
                ]}},
                {"id": "small", "image": {"input": "{{item.path}}", "to": "out", "ops": [
                    {"resize": {"width": 32, "height": 32, "fit": "contain"}},
                    {"convert": {"format": "png"}}]}},
            ],
            "sink": [{"jsonl": None}],
        },
    ], "test", tmp_path)  # fmt: skip
    async with serve(MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0, pipelines=pipes) as gs:
        keys = await make_keys(gs.services.keys)
        made = await gs.client.post("/v1/pipelines/both/runs", json={}, headers=auth(keys.a))
        run_id = made.json()["id"]
        async with asyncio.timeout(30):
            while True:
                r = await gs.client.get(f"/v1/pipelines/both/runs/{run_id}", headers=auth(keys.a))
                if r.json()["status"] in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.05)
        run = r.json()
        assert run["status"] == "completed" and run["counts"]["succeeded"] == 3, run
        out = [
            orjson.loads(x)
            for x in (await _content(gs, keys.a, run["output_file_ids"][0])).splitlines()
        ]
        assert [o["key"] for o in out] == ["p0.jpg", "p1.jpg", "p2.jpg"]
        fan = out[0]["steps"]["fan"]
        texts = {
            b["name"]: b["result"]["choices"][0]["message"]["content"] for b in fan["branches"]
        }
        assert texts == {"one": "p0.jpg one", "two": "p0.jpg two"}
        small = out[0]["steps"]["small"]
        assert (small["width"], small["height"], small["media_type"]) == (32, 24, "image/png")
        png = await _content(gs, keys.a, small["file_id"])
        assert png.startswith(b"\x89PNG") and (tmp_path / "out" / "p0.png").read_bytes() == png


async def test_a_source_named_by_an_input(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"t": "x"}\n{"t": "y"}\n')
    pipes = load_pipelines([{
        "name": "p", "inputs": {"file": {"required": True}}, "source": {"jsonl": "{{inputs.file}}"},
        "steps": [{"id": "e", "model": "echo", "prompt": "{{item.t}}"}],
    }], "test", tmp_path)  # fmt: skip
    async with serve(MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0, pipelines=pipes) as gs:
        keys = await make_keys(gs.services.keys)
        ok = await gs.client.post(
            "/v1/pipelines/p/runs", json={"inputs": {"file": "a.jsonl"}}, headers=auth(keys.a)
        )
        missing = await gs.client.post(
            "/v1/pipelines/p/runs", json={"inputs": {"file": "nope.jsonl"}}, headers=auth(keys.a)
        )
        none = await gs.client.post("/v1/pipelines/p/runs", json={}, headers=auth(keys.a))
        assert none.status_code == 400 and "inputs.file: required" in none.text
        for made, status in ((ok, "completed"), (missing, "failed")):
            async with asyncio.timeout(20):
                while True:
                    r = await gs.client.get(
                        f"/v1/pipelines/p/runs/{made.json()['id']}", headers=auth(keys.a)
                    )
                    if r.json()["status"] in ("completed", "failed"):
                        break
                    await asyncio.sleep(0.05)
            assert r.json()["status"] == status, r.json()
        assert r.json()["error"]["code"] == "source_failed"
        assert "nope.jsonl" in r.json()["error"]["message"]
