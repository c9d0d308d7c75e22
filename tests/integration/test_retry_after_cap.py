"""A ``Retry-After`` past ``max_retry_after_s`` does not park a job: it fails over or fails.

The upstream is a real HTTP server (a tiny FastAPI app under uvicorn on 127.0.0.1, on a thread of
this process) that answers every request 429 with ``Retry-After: 86400``. genspool runs in
process over ``memory://`` with the default cap (300 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from genspool.testing.inprocess import serve
from tests.helpers.api import CHAT, TERMINAL, chat_body
from tests.helpers.upstream import served


def upstream(calls: list[float]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        calls.append(time.time())
        return JSONResponse(
            {"error": {"message": "come back tomorrow"}},
            status_code=429,
            headers={"Retry-After": "86400"},
        )

    return app


@pytest.fixture
def upstream_url() -> Iterator[tuple[str, list[float]]]:
    calls: list[float] = []
    with served(upstream(calls)) as url:
        yield url, calls


def _remote(url: str, fallbacks: list[str]) -> dict[str, Any]:
    return {
        "name": "remote",
        "provider": "openai",
        "options": {"base_url": url},
        "limits": {"call_retries": 0, "timeout_s": 5},
        "breaker": {"enabled": False},
        "fallbacks": fallbacks,
    }


async def _run_one(models: list[dict[str, Any]]) -> dict[str, Any]:
    async with serve(models, worker=True) as gs:
        body = chat_body("remote", "hello")
        job = (await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body})).json()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            job = (await gs.client.get(f"/v1/jobs/{job['id']}")).json()
            if job["status"] in TERMINAL:
                return job
            await asyncio.sleep(0.05)
    raise AssertionError(f"the job is still {job['status']}: {job.get('error')}")


async def test_a_day_long_retry_after_dead_letters_the_job_naming_the_cap(
    upstream_url: tuple[str, list[float]],
) -> None:
    url, calls = upstream_url
    job = await _run_one([_remote(url, [])])
    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "Retry-After 86400 s" in message and "max_retry_after_s=300" in message, message
    assert len(calls) == 1


async def test_a_day_long_retry_after_fails_over_to_the_fallback(
    upstream_url: tuple[str, list[float]],
) -> None:
    url, calls = upstream_url
    job = await _run_one([_remote(url, ["backup"]), {"name": "backup", "provider": "echo"}])
    assert job["status"] == "succeeded", job
    assert job["result"]["body"]["model"] == "backup"
    assert len(calls) == 1
