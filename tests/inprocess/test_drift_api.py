"""Drift sampling and ``GET /v1/drift`` in process: chat jobs of a sampled model are embedded
through the queue (an echo embedding model here: the plumbing, not the statistics, is under
test; tests/unit/test_drift_stats.py uses real MiniLM vectors) and stored once each; reports
read the windows asked for; bad input is a 400 naming the field; a client cannot plant a
sample through the reserved metadata key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rich.console import Console

from genspool.cli._drift import _table
from genspool.core.roles import DriftSample, DriftSamples
from genspool.drift.html import report_html
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, EMBEDDINGS, FAST_RETRY, assert_error

MODELS: list[dict[str, Any]] = [
    {"name": "chat", "provider": "echo", "drift": {"sample_rate": 1.0, "embed_model": "emb"}},
    {"name": "quiet", "provider": "echo"},
    {"name": "emb", "provider": "echo"},
]


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve(MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as running:
        yield running


def samples(gs: InProcess) -> DriftSamples:
    store = gs.queue.storage.drift
    assert store is not None
    return store


async def stored(gs: InProcess, model: str, count: int) -> list[DriftSample]:
    for _ in range(200):
        found = await samples(gs).drift_list(model, 0, time.time() + 60, 1000)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(found)} samples of {model}, not {count}")


async def chat(gs: InProcess, model: str, text: str, **more: Any) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    response = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body, **more})
    assert response.status_code in (200, 201, 202), response.text


async def test_sampled_chat_jobs_become_samples_and_a_report(gs: InProcess) -> None:
    for i in range(25):
        await chat(gs, "chat", "word " * (i + 1))
        await chat(gs, "quiet", "not sampled")
    found = await stored(gs, "chat", 25)
    assert sorted(s.output_chars for s in found) == sorted(
        len("word " * (i + 1)) for i in range(25)
    )
    assert all(s.prompt_chars == s.output_chars and s.embed_model == "emb" for s in found)
    assert await samples(gs).drift_models() == ["chat"]  # "quiet" has no sample_rate
    response = await gs.client.get(
        "/v1/drift", params={"model": "chat", "baseline_start": "-1h", "baseline_end": "now",
                             "current_start": "-1h", "current_end": "now"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["object"] == "drift.report" and report["model"] == "chat"
    assert report["baseline"]["samples"] == report["current"]["samples"] == 25
    assert report["verdict"] == "no_drift"  # the same samples on both sides
    assert {m["name"] for m in report["methods"]} >= {"centroid", "mmd", "wasserstein"}
    page = report_html(report)  # what `genspool drift report --html` writes
    assert page.count("<svg") == 3 and "<script" not in page and "src=" not in page
    console = Console(width=120, record=True)
    console.print(_table(report))
    assert "no_drift (baseline 25, current 25 samples)" in " ".join(console.export_text().split())
    empty = await gs.client.get("/v1/drift", params={"model": "chat"})  # default windows
    assert empty.json()["verdict"] == "insufficient"  # the week before today holds nothing


async def test_bad_input_is_a_400_naming_the_field(gs: InProcess) -> None:
    msg = assert_error(await gs.client.get("/v1/drift", params={"model": "nope"}), 400)
    assert msg.startswith("model: unknown model 'nope'")
    bad = {"model": "chat", "current_start": "yesterday-ish"}
    assert "current_start" in assert_error(await gs.client.get("/v1/drift", params=bad), 400)
    backwards = {"model": "chat", "baseline_start": "-1d", "baseline_end": "-2d"}
    assert "baseline_end" in assert_error(await gs.client.get("/v1/drift", params=backwards), 400)
    assert_error(await gs.client.get("/v1/drift"), 400)  # no model at all


async def test_a_client_cannot_plant_a_sample(gs: InProcess) -> None:
    planted = {"genspool.drift": {"job": "x", "model": "chat", "at": time.time(),
                                  "prompt_chars": 1, "output_chars": 1}}  # fmt: skip
    body = {"model": "emb", "input": "hello"}
    response = await gs.client.post(
        "/v1/jobs", json={"url": EMBEDDINGS, "body": body, "metadata": planted}
    )
    job = response.json()
    for _ in range(200):
        if (await gs.client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "succeeded":
            break
        await asyncio.sleep(0.02)
    await chat(gs, "chat", "a real one")
    assert [s.id for s in await stored(gs, "chat", 1)] != ["x"]


def _planted(model: str, at: float, centre: float, n: int) -> list[DriftSample]:
    """Samples around ``centre`` in the first dimension (planted: the gauge is under test)."""
    import numpy as np

    rng = np.random.default_rng(int(centre * 10) + n)
    vectors = rng.normal(0, 0.05, (n, 8)).astype(np.float32)
    vectors[:, 0] += centre
    return [
        DriftSample(f"{model}-{at:.0f}-{i}", model, at + i, 40 + i % 5, 50 + i % 7, "emb",
                    vectors[i].tobytes())
        for i in range(n)
    ]  # fmt: skip


async def test_a_scheduled_check_sets_the_drift_gauge_and_old_samples_are_purged(
    gs: InProcess,
) -> None:
    from genspool.drift.watch import DriftWatch

    now = time.time()
    store = samples(gs)
    await store.drift_put(_planted("chat", now - 3 * 86_400, 1.0, 40))  # the baseline week
    await store.drift_put(_planted("chat", now - 3_600, -1.0, 40))  # the last day: elsewhere
    await store.drift_put(_planted("chat", now - 40 * 86_400, 1.0, 5))  # past keep_days (30)
    chat_cfg = gs.services.catalog.config("chat")
    drift = chat_cfg.drift.model_copy(update={"check_every_s": 60})
    cfg = chat_cfg.model_copy(update={"drift": drift})
    watch = DriftWatch(store, [cfg], time.time)
    assert watch.configs == [cfg] and watch.keep_s == 30 * 86_400
    assert await watch.check(store, cfg) == "drift"
    text = (await gs.client.get("/metrics")).text
    assert 'genspool_drift_flagged{model="chat"} 1.0' in text
    assert 'genspool_drift_reports_total{model="chat",verdict="drift"} 1.0' in text
    assert await watch.purge(store, watch.keep_s) == 5
    assert len(await store.drift_list("chat", 0, now + 60, 1000)) == 80
