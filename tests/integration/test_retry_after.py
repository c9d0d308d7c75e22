"""``Retry-After`` is always honoured: no request reaches the model before the wait it asked for.

The upstream is a real HTTP server (a tiny FastAPI app under uvicorn on 127.0.0.1, on a thread of
this process): the first request for each prompt answers 429 with ``Retry-After: 1``, later ones
answer 200; it records when each request arrived. genspool runs in process over ``memory://``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from genspool.testing.inprocess import serve
from tests.helpers.api import CHAT, FAST_RETRY, TERMINAL, chat_body
from tests.helpers.upstream import served

RETRY_AFTER_S = 1.0


def upstream(arrivals: dict[str, list[float]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        text = body["messages"][-1]["content"]
        seen = arrivals.setdefault(text, [])
        seen.append(time.time())
        if len(seen) == 1:
            return JSONResponse(
                {"error": {"message": "slow down"}},
                status_code=429,
                headers={"Retry-After": f"{RETRY_AFTER_S:g}"},
            )
        message = {"role": "assistant", "content": text}
        return JSONResponse({"object": "chat.completion", "choices": [{"message": message}]})

    return app


@pytest.fixture
def upstream_url() -> Iterator[tuple[str, dict[str, list[float]]]]:
    arrivals: dict[str, list[float]] = {}
    with served(upstream(arrivals)) as url:
        yield url, arrivals


@pytest.mark.parametrize("call_retries", [0, 2])
async def test_no_retry_reaches_the_model_before_its_retry_after(
    upstream_url: tuple[str, dict[str, list[float]]], call_retries: int
) -> None:
    url, arrivals = upstream_url
    model = {
        "name": "remote",
        "provider": "openai",
        "options": {"base_url": url},
        "batching": {"max_batch_size": 4, "max_wait_ms": 0},
        "limits": {"call_retries": call_retries, "timeout_s": 5},
        "breaker": {"enabled": False},
    }
    async with serve([model], worker=True, retry=FAST_RETRY) as gs:
        ids = []
        for i in range(8):
            body = chat_body("remote", f"prompt {i}")
            answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body})
            ids.append(answer.json()["id"])
            await asyncio.sleep(0.1)  # each one's 429 falls while others are in flight
        deadline = time.monotonic() + 30
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = [(await gs.client.get(f"/v1/jobs/{i}")).json() for i in ids]
            if all(j["status"] in TERMINAL for j in jobs):
                break
            await asyncio.sleep(0.05)
    assert [j["status"] for j in jobs] == ["succeeded"] * 8, jobs
    gaps = [seen[1] - seen[0] for seen in arrivals.values()]
    assert len(gaps) == 8 and min(gaps) >= RETRY_AFTER_S, gaps
