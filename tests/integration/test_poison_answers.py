"""A bad answer harms only its own job, with the true reason.

The upstream is a real HTTP server (a tiny FastAPI app under uvicorn on 127.0.0.1, on a thread of
this process). Among 40 prompts of one batch, one answer is malformed JSON, one carries a lone
surrogate escape (``"\\ud800"``, which servers emit when a token splits an emoji) and one an
integer over 64 bits; the other 37 are good. genspool runs in process over a real SQLite file or
a PostgreSQL schema. Expected: the malformed one fails alone with a reason naming malformed JSON
(never "lease expired"), the surrogate is stored repaired (U+FFFD), the huge integer is stored
as a string; each of the 37 others succeeds after exactly one upstream call; and on SQLite an
unrelated submit right after still answers 202 (no write transaction left open).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from genspool.testing.inprocess import serve
from tests.helpers.api import CHAT, FAST_RETRY, TERMINAL, chat_body

N = 40
MALFORMED, SURROGATE, HUGE = "prompt 3", "prompt 17", "prompt 29"


def _answer(text: str) -> bytes:
    if text == MALFORMED:
        return b'{"object": "chat.completion", "choices": [{"ind'
    content = '"\\ud800 split emoji"' if text == SURROGATE else f'"{text}"'
    seed = "123456789012345678901234567890" if text == HUGE else "1"
    return (
        '{"object": "chat.completion", "seed": ' + seed + ', "choices": [{"index": 0, '
        '"message": {"role": "assistant", "content": ' + content + '}, "finish_reason": "stop"}]}'
    ).encode()


def upstream(calls: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        text = body["messages"][-1]["content"]
        calls[text] = calls.get(text, 0) + 1
        return Response(_answer(text), media_type="application/json")

    return app


@pytest.fixture
def upstream_url() -> Iterator[tuple[str, dict[str, int]]]:
    calls: dict[str, int] = {}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(upstream(calls), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", calls
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_bad_answer_harms_only_its_own_job(
    upstream_url: tuple[str, dict[str, int]], namespaced_url: Callable[[str], str], kind: str
) -> None:
    url, calls = upstream_url
    model = {
        "name": "remote",
        "provider": "openai",
        "options": {"base_url": url},
        "max_attempts": 3,
        "batching": {"max_batch_size": N, "max_wait_ms": 0},
        "limits": {"call_retries": 0, "timeout_s": 10},
        "breaker": {"enabled": False},
    }
    db = namespaced_url(kind)
    async with serve([model], url=db) as gs:  # no worker yet: the 40 wait, one batch
        ids = []
        for i in range(N):
            body = chat_body("remote", f"prompt {i}")
            answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
    async with serve([model], url=db, worker=True, retry=FAST_RETRY) as gs:
        jobs = await _settled(gs.client, ids)
        other = await gs.client.post(
            "/v1/jobs", json={"url": CHAT, "body": chat_body("remote", "unrelated")}
        )
        assert other.status_code == 202, other.text
    by_text = {f"prompt {i}": j for i, j in enumerate(jobs)}
    bad = by_text.pop(MALFORMED)
    assert bad["status"] == "failed", bad
    assert "malformed JSON" in bad["error"]["message"], bad["error"]
    assert "lease" not in bad["error"]["message"]
    repaired = by_text[SURROGATE]
    assert repaired["status"] == "succeeded", repaired
    content = repaired["result"]["body"]["choices"][0]["message"]["content"]
    assert content == "\ufffd split emoji"
    huge = by_text[HUGE]
    assert huge["status"] == "succeeded", huge
    assert huge["result"]["body"]["seed"] == "123456789012345678901234567890"
    assert all(j["status"] == "succeeded" for j in by_text.values()), by_text
    assert all(calls[t] == 1 for t in by_text), calls
    assert calls[MALFORMED] == 3  # retried as a remote's failure, then dead-lettered


async def _settled(client: Any, ids: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = [(await client.get(f"/v1/jobs/{i}")).json() for i in ids]
        if all(j["status"] in TERMINAL for j in jobs):
            return jobs
        await asyncio.sleep(0.1)
    raise AssertionError(f"not settled: {[j['status'] for j in jobs]}")
