"""Logs that explain: one line per retry, dead letter, shed request, breaker change, fallback
use, rate-limit wait and handed-back job — each naming the job or model and a reason, and none
quoting a prompt, an answer or a key.

The remote model is the fault-injecting OpenAI-compatible server (a real HTTP server on
127.0.0.1 that answers 429 on purpose); the rest runs in process on ``memory://``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from genspool.backends import open_storage
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.testing.faults import FaultServer
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, FAST_RETRY, MODELS, TERMINAL, chat_body

SECRET = "PROMPT-SECRET-7f3a"  # must never reach a log line


def lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name.startswith("genspool.")]
    return [m for m in found if re.search(pattern, m)]


def assert_nothing_private(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    assert "fault injected" not in text  # the remote's error body is not quoted either


async def finished(gs: InProcess, job_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await gs.client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s")


async def submit(gs: InProcess, model: str, text: str = SECRET) -> str:
    answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body(model, text)})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


async def test_each_retry_and_the_dead_letter_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genspool")
    async with serve(MODELS, worker=True, retry=FAST_RETRY) as gs:
        job_id = await submit(gs, "doomed")  # times out on every attempt, max_attempts 2
        assert (await finished(gs, job_id))["status"] == "failed"
    retried = lines(caplog, rf"^job {job_id} \(model doomed\): attempt 1/2 failed")
    assert len(retried) == 1 and re.search(r"\(model_timeout\); retry in \d+\.\d\d s$", retried[0])
    dead = lines(caplog, rf"^job {job_id} \(model doomed\): attempt 2/2 failed")
    assert len(dead) == 1 and dead[0].endswith("(model_timeout); dead-lettered"), dead
    assert_nothing_private(caplog)


async def test_a_shed_submission_is_logged_with_model_tenant_and_depth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shed = {"name": "shed", "provider": "echo", "admission": {"max_queue_depth": 2}}
    async with serve([shed]) as gs:
        codes = [
            (await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("shed")}))
            for _ in range(3)
        ]
    assert [r.status_code for r in codes] == [202, 202, 429]
    (line,) = lines(caplog, "^shed a submission")
    assert line == (
        "shed a submission (model shed, tenant default): queue 2 waiting, limit 2; Retry-After 1 s"
    )
    assert [r.levelname for r in caplog.records if r.getMessage() == line] == ["WARNING"]


async def test_retries_breaker_and_fallback_of_a_remote_model_each_say_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="genspool")
    with FaultServer(rate_429=1.0, retry_after_s=0.05) as url:
        primary = {
            "name": "primary",
            "provider": "openai",
            "options": {"base_url": f"{url}/v1"},
            "fallbacks": ["backup"],
            "limits": {"call_retries": 1, "timeout_s": 5},
            "breaker": {"failures": 1, "failure_ratio": None, "cooldown_s": 60},
        }
        backup = {"name": "backup", "provider": "echo"}
        async with serve([primary, backup], worker=True, retry=FAST_RETRY) as gs:
            job = await finished(gs, await submit(gs, "primary"))
    assert job["status"] == "succeeded" and job["result"]["body"]["model"] == "backup"
    (retry,) = lines(caplog, "^model primary: in-call retry")
    assert retry.startswith("model primary: in-call retry 1/1 of 1 request(s) ")
    assert "(model_error (HTTP 429), Retry-After 0.05 s); retry in 0." in retry, retry
    (opened,) = lines(caplog, "^model primary: circuit breaker closed -> open")
    assert "(1 consecutive failures; 1 of 1 calls failed in the last 60 s)" in opened
    (fallback,) = lines(caplog, "^model primary: .* fallback")
    assert fallback == (
        "model primary: 1 request(s) sent to fallback model backup "
        "(model_error (HTTP 429), Retry-After 0.05 s); it answered 1"
    )
    assert_nothing_private(caplog)


async def test_each_job_handed_back_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genspool")
    async with Queue(open_storage("memory://handed-back")) as queue:
        jobs = [Job(url=CHAT, body=chat_body("echo", SECRET), model="echo") for _ in range(2)]
        await queue.submit_many(jobs)
        leased = await queue.lease("echo", 10)
        await queue.release(leased)
        await queue.storage.drop()
    handed = lines(caplog, r"handed back to the queue unfinished")
    assert sorted(handed) == sorted(
        f"job {j.id} (model echo): handed back to the queue unfinished (by its worker: draining"
        " or preempted); the attempt does not count"
        for j in jobs
    )
    assert_nothing_private(caplog)
