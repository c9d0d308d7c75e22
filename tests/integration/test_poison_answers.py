"""A bad answer harms only its own job, with the true reason.

The upstream is a real HTTP server (a tiny FastAPI app under uvicorn on 127.0.0.1, on a thread of
this process). Among 40 prompts of one batch, one answer is malformed JSON, one carries a lone
surrogate escape (``"\\ud800"``, which servers emit when a token splits an emoji) and one an
integer over 64 bits, one an integer past the float range; the other 36 are good. genspool runs
in process over a real SQLite file or a PostgreSQL schema. Expected: the malformed one fails
alone with a reason naming malformed JSON (never "lease expired"); the surrogate is stored
repaired (U+FFFD) and the huge integer as the nearest float (genspool._storable); the one past
repair fails at once, not retried, as ``unstorable_result``; each of the others succeeds after
exactly one upstream call; and an unrelated submit right after still answers 202 (on SQLite: no
write transaction left open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from genspool.core.worker import Worker
from genspool.exceptions import ModelError
from genspool.providers import base
from genspool.providers.openai_http import OpenAIProvider
from genspool.resilience.shared import Shared
from genspool.runtime import ModelRegistry
from genspool.testing.inprocess import models_of, serve
from tests.helpers.api import CHAT, FAST_RETRY, TERMINAL, chat_body
from tests.helpers.upstream import served

N = 40
MALFORMED, SURROGATE, HUGE, PAST_REPAIR = "prompt 3", "prompt 17", "prompt 29", "prompt 35"
BIG = "123456789012345678901234567890"


def _answer(text: str) -> bytes:
    if text == MALFORMED:
        return b'{"object": "chat.completion", "choices": [{"ind'
    content = '"\\ud800 split emoji"' if text == SURROGATE else f'"{text}"'
    seed = {HUGE: BIG, SURROGATE: BIG, PAST_REPAIR: "9" * 400}.get(text, "1")
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
        if body.get("stream"):  # as a real server does: server-sent events, not one body
            chunk = (
                b'{"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}'
            )
            events = b"data: " + chunk + b"\n\ndata: [DONE]\n\n"
            return Response(events, media_type="text/event-stream")
        return Response(_answer(text), media_type="application/json")

    return app


@pytest.fixture
def upstream_url() -> Iterator[tuple[str, dict[str, int]]]:
    calls: dict[str, int] = {}
    with served(upstream(calls)) as url:
        yield url, calls


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
    assert repaired["result"]["body"]["seed"] == float(BIG)
    huge = by_text[HUGE]
    assert huge["status"] == "succeeded", huge
    assert huge["result"]["body"]["seed"] == float(BIG)
    past = by_text.pop(PAST_REPAIR)
    assert past["status"] == "failed", past
    assert past["error"]["code"] == "unstorable_result", past["error"]
    assert calls[PAST_REPAIR] == 1
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


class FakeSurrogateProvider(base.Provider):
    """Fake: a provider (a plugin, say) whose answers hold Python values no store encodes: a
    lone surrogate in one, an integer past the float range in another (the remote provider
    repairs what it parses, so only a provider of this kind can hand them to the worker)."""

    endpoints = frozenset({CHAT})

    async def handle(self, batch: Sequence[base.Request]) -> list[base.Response | ModelError]:
        return [_fake_answer(r.body["messages"][-1]["content"]) for r in batch]


def _fake_answer(text: str) -> base.Response:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    if text == "surrogate":
        choice["message"] = {"role": "assistant", "content": "\ud800 split emoji"}
    return {"object": "chat.completion", "choices": [choice], "n": 10**400 if text == "huge" else 1}


async def test_an_answer_the_store_cannot_encode_fails_or_is_repaired_alone(
    namespaced_url: Callable[[str], str],
) -> None:
    model = {"name": "plugin", "provider": "echo", "batching": {"max_batch_size": 8}}
    texts = ["ok 1", "surrogate", "huge", "ok 2"]
    async with serve([model], url=namespaced_url("sqlite"), retry=FAST_RETRY) as gs:
        ids = []
        for text in texts:  # all waiting before the worker starts: one batch
            body = chat_body("plugin", text)
            answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body})
            ids.append(answer.json()["id"])
        storage = gs.queue.storage
        registry = ModelRegistry(
            models_of([model]), backend=Shared(storage.coordination, storage.kv)
        )
        registry._providers["plugin"] = FakeSurrogateProvider("plugin")  # the fake, unwrapped
        worker = Worker(gs.queue, registry, maintain_s=0.05)
        runner = asyncio.create_task(worker.run())
        try:
            jobs = await _settled(gs.client, ids)
            other = await gs.client.post(
                "/v1/jobs", json={"url": CHAT, "body": chat_body("plugin", "unrelated")}
            )
            assert other.status_code == 202, other.text  # no write transaction left open
        finally:
            worker.stop()
            await runner
    by_text = dict(zip(texts, jobs, strict=True))
    assert [by_text[t]["status"] for t in texts] == [
        "succeeded",
        "succeeded",
        "failed",
        "succeeded",
    ]
    content = by_text["surrogate"]["result"]["body"]["choices"][0]["message"]["content"]
    assert content == "\ufffd split emoji"
    assert by_text["huge"]["error"]["code"] == "unstorable_result", by_text["huge"]["error"]
    assert len(by_text["huge"]["history"]) == 1  # not retried: it would answer the same


async def test_a_stream_flag_in_a_job_body_gets_one_whole_answer(
    upstream_url: tuple[str, dict[str, int]],
) -> None:
    """``stream: true`` in a stored job's body (the door refuses it today; older jobs may hold
    it) is dropped by the remote provider: one plain call, the whole answer, nothing to parse
    as events. Nobody listens, so the provider does not stream either."""
    url, calls = upstream_url
    provider = OpenAIProvider("remote", base_url=url)
    body = {**chat_body("remote", "prompt 1"), "stream": True, "stream_options": {}}
    try:
        (answer,) = await provider.handle([base.Request(CHAT, body)])
    finally:
        await provider.aclose()
    assert isinstance(answer, dict), answer
    assert answer["choices"][0]["message"]["content"] == "prompt 1"
    assert calls == {"prompt 1": 1}
