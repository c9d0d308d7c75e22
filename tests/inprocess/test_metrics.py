"""``GET /metrics``: the exposition parses, its counts agree with the jobs run, and its series
are bounded: jobs from 1,000 tenants and requests naming 1,000 unknown models add none."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from genspool.core.keys import Scope
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, EMBEDDINGS, FAST_RETRY, MODELS, bearer, chat_body

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(gs: InProcess, headers: dict[str, str] | None = None) -> tuple[str, Samples]:
    response = await gs.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def run_jobs(gs: InProcess, model: str, n: int, headers: Any = None) -> list[str]:
    ids = []
    for i in range(n):
        body = {"url": CHAT, "body": chat_body(model, f"job {i}")}
        answer = await gs.client.post("/v1/jobs", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    for job_id in ids:
        await gs.queue.wait(job_id, timeout=10)
    return ids


async def test_the_exposition_parses_and_counts_agree_with_the_jobs_run() -> None:
    async with serve(MODELS, worker=True, retry=FAST_RETRY) as gs:
        await run_jobs(gs, "echo", 7)
        embed = {"url": EMBEDDINGS, "body": {"model": "pager", "input": ["a", "b"]}}
        assert (await gs.client.post("/v1/jobs", json=embed)).status_code == 202
        doomed = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("doomed")})
        await gs.queue.wait(doomed.json()["id"], timeout=10)
        await asyncio.sleep(0.1)  # the embedding job ends too
        text, samples = await scrape(gs)
        assert value(samples, "genspool_jobs_submitted_total", model="echo") == 7
        assert value(samples, "genspool_jobs_finished_total", model="echo", status="succeeded") == 7
        assert value(samples, "genspool_job_run_seconds_count", model="echo") == 7
        assert value(samples, "genspool_job_end_to_end_seconds_count", model="echo") == 7
        assert value(samples, "genspool_queue_wait_seconds_count", model="echo") == 7
        assert value(samples, "genspool_model_calls_total", model="echo", outcome="ok") == 7
        assert value(samples, "genspool_model_call_seconds_count", model="echo") == 7
        assert value(samples, "genspool_batch_size_sum", model="echo") == 7
        assert value(samples, "genspool_workers", model="echo") == 1  # this app's, alive
        assert value(samples, "genspool_tokens_total", model="echo", direction="output") > 0
        # doomed: 2 attempts, each timing out: one retry, then a dead letter.
        assert value(samples, "genspool_jobs_finished_total", model="doomed", status="failed") == 1
        assert value(samples, "genspool_dead_letters_total", model="doomed") == 1
        assert value(samples, "genspool_job_retries_total", model="doomed", reason="timeout") == 1
        assert (
            value(samples, "genspool_jobs_finished_total", model="pager", status="succeeded") == 1
        )
        assert value(samples, "genspool_queue_depth", model="echo", status="queued") == 0
        assert value(samples, "genspool_worker_in_flight", model="echo") == 0
        assert value(samples, "genspool_build_info", version=_version(samples), python=_py()) == 1
        assert (
            value(samples, "genspool_shed_requests_total", model="echo", reason="queue_depth") == 0
        )
        assert 'genspool_breaker_state{model="echo",state="disabled"} 1.0' in text
        labels = {k for _, pairs in samples for k, _ in pairs}
        assert labels <= {"model", "status", "reason", "outcome", "direction", "state", "le"} | {
            "version",
            "python",
        }
        assert not any(v.startswith("job_") for _, pairs in samples for _, v in pairs)
        assert "genspool_gpu" not in text  # no GPU here: no series at all


def _version(samples: Samples) -> str:
    return next(
        dict(labels)["version"] for (name, labels) in samples if name == "genspool_build_info"
    )


def _py() -> str:
    import platform

    return platform.python_version()


async def test_depth_and_oldest_age_are_read_from_the_backend() -> None:
    async with serve(MODELS) as gs:  # no worker: the jobs wait
        for _ in range(3):
            await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("echo")})
        await asyncio.sleep(0.05)
        gs.app.state.metrics.snapshot.ttl_s = 0.0  # read the backend at each scrape
        _, samples = await scrape(gs)
        assert value(samples, "genspool_queue_depth", model="echo", status="queued") == 3
        assert value(samples, "genspool_queue_depth", model="pager", status="queued") == 0
        assert value(samples, "genspool_queue_oldest_waiting_age_seconds", model="echo") > 0
        assert value(samples, "genspool_queue_oldest_waiting_age_seconds", model="pager") == 0


async def test_shed_requests_are_counted_by_reason() -> None:
    shed = {"name": "shed", "provider": "echo", "admission": {"max_queue_depth": 2}}
    async with serve([shed]) as gs:
        codes = [
            (
                await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("shed")})
            ).status_code
            for _ in range(5)
        ]
        assert codes == [202, 202, 429, 429, 429]
        _, samples = await scrape(gs)
        assert (
            value(samples, "genspool_shed_requests_total", model="shed", reason="queue_depth") == 3
        )


async def test_series_do_not_grow_with_tenants_or_unknown_model_names() -> None:
    async with serve(MODELS, worker=True, retry=FAST_RETRY) as gs:
        await run_jobs(gs, "echo", 3)
        before, _ = await scrape(gs)
        keys = [(await gs.services.keys.create(f"tenant-{i}", [Scope.SUBMIT, Scope.READ]))[1]
                for i in range(1_000)]  # fmt: skip
        admin = (await gs.services.keys.create("ops", [Scope.ADMIN]))[1]
        submitted = []
        for key in keys:
            body = {"url": CHAT, "body": chat_body("echo")}
            answer = await gs.client.post("/v1/jobs", json=body, headers=bearer(key))
            assert answer.status_code == 202
            submitted.append(answer.json()["id"])
        for i in range(1_000):
            junk = {"url": CHAT, "body": chat_body(f"junk-model-{i}")}
            answer = await gs.client.post("/v1/jobs", json=junk, headers=bearer(keys[i]))
            assert answer.status_code == 404, answer.text
            chat = await gs.client.post(CHAT, json=chat_body(f"other-{i}"), headers=bearer(keys[i]))
            assert chat.status_code == 404, chat.text
        for job_id in submitted:
            await gs.queue.wait(job_id, timeout=30)
        after, samples = await scrape(gs, bearer(admin))
        assert _series(after) == _series(before)
        assert (
            value(samples, "genspool_jobs_finished_total", model="echo", status="succeeded") == 1003
        )
        assert "junk" not in after and "tenant-" not in after and "other-" not in after


def _series(text: str) -> set[str]:
    """The series of an exposition: each sample's name and labels, without its value."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


async def test_metrics_need_the_read_scope_once_keys_exist() -> None:
    async with serve(MODELS) as gs:
        read = (await gs.services.keys.create("acme", [Scope.READ]))[1]
        submit = (await gs.services.keys.create("acme", [Scope.SUBMIT]))[1]
        assert (await gs.client.get("/metrics")).status_code == 401
        assert (await gs.client.get("/metrics", headers=bearer(submit))).status_code == 403
        assert (await gs.client.get("/metrics", headers=bearer(read))).status_code == 200


@pytest.mark.skipif(
    shutil.which("promtool") is None and os.environ.get("CI") != "true",
    reason="promtool is not installed (apt-get install -y prometheus); under CI=true: a failure",
)
async def test_promtool_accepts_the_exposition() -> None:
    async with serve(MODELS, worker=True, retry=FAST_RETRY) as gs:
        await run_jobs(gs, "echo", 2)
        text, _ = await scrape(gs)
    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_costly_text_is_rendered_ahead_in_a_thread_and_kept_fresh() -> None:
    """Forced onto the rendering-ahead path (``inline_s`` 0, as a render of 100 busy models
    takes tens of ms): scrapes are answered from a text rendered in another thread, and a
    change shows within ``fresh_s``."""
    import threading

    async with serve(MODELS) as gs:
        metrics = gs.app.state.metrics
        metrics.inline_s, metrics.fresh_s = 0.0, 0.2
        threads: set[int] = set()
        render = metrics.exposition.render

        def recorded() -> bytes:
            threads.add(threading.get_ident())
            return render()

        metrics.exposition.render = recorded
        await scrape(gs)  # rendered at once (inline: no rendering known yet to be costly)
        threads.clear()
        metrics.series.submitted.labels("echo").inc(5)
        seen = []
        for _ in range(50):
            _, samples = await scrape(gs)
            seen.append(value(samples, "genspool_jobs_submitted_total", model="echo"))
            if seen[-1] == 5:
                break
            await asyncio.sleep(0.05)
        assert seen[-1] == 5 and len(seen) * 0.05 < 0.2 + 1.0  # within fresh_s (and slack)
        assert threads and threading.get_ident() not in threads  # never on the event loop
