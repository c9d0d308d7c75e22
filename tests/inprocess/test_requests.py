"""Request validation and error shapes: every refusal is one OpenAI-shaped error that names
what was wrong, and nothing refused is stored."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, MODELS, assert_error, chat_body

MAX_BODY = 65_536
MSG = [{"role": "user", "content": "hi"}]


async def job(gs: InProcess, body: Any, url: str = CHAT, **more: Any) -> httpx.Response:
    return await gs.client.post("/v1/jobs", json={"url": url, "body": body, **more})


async def test_bad_input_is_refused_clearly_and_nothing_refused_is_stored(gs: InProcess) -> None:
    e = assert_error(await job(gs, {"model": "gpt-17", "messages": MSG}), 404)
    assert "gpt-17" in e and "echo" in e and "tiny" in e  # the known models are listed
    raw = {"content": b'{"url": "/v1/chat/completions", "body": {'}
    headers = {"content-type": "application/json"}
    assert "JSON" in assert_error(await gs.client.post("/v1/jobs", headers=headers, **raw), 400)
    bad = await gs.client.post(CHAT, content=b"{nope", headers=headers)
    assert "JSON" in assert_error(bad, 400)
    named = [
        (job(gs, chat_body("echo"), priority="high"), "priority"),
        (job(gs, chat_body("echo"), prioritty=3), "prioritty"),
        (job(gs, {**chat_body("echo"), "temperature": 7}), "temperature"),
        (job(gs, {"model": "echo", "messages": []}), "messages"),
        (job(gs, {"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}), "role"),
        (job(gs, {"messages": MSG}), "model"),
        (job(gs, chat_body("echo"), expires_at=time.time() - 5), "expires_at"),
        (job(gs, {"model": "echo", "prompt": "x"}, url="/v1/images/generations"), "/v1/images"),
    ]
    for call, field in named:
        assert field in assert_error(await call, 400), field
    e = assert_error(await job(gs, {**chat_body("echo"), "n": 2}), 400)
    assert e.startswith("n:")
    assert_error(await gs.client.post(CHAT, json=[1, 2]), 400)
    assert_error(await job(gs, "not an object"), 400)
    listed = (await gs.client.get("/v1/jobs")).json()
    assert listed["data"] == []


async def test_a_prompt_beyond_the_context_window_names_both_numbers(gs: InProcess) -> None:
    body = {**chat_body("tiny", " ".join(["word"] * 10)), "max_tokens": 10}
    e = assert_error(await job(gs, body), 400, "context_length_exceeded")
    assert "10 tokens" in e and "16" in e
    assert_error(await gs.client.post(CHAT, json=body), 400, "context_length_exceeded")


async def test_a_body_over_the_limit_is_413_declared_or_streamed() -> None:
    huge = chat_body("echo", "x" * (MAX_BODY + 10))
    async with serve(MODELS, max_body_bytes=MAX_BODY) as gs:
        for path, body in ((CHAT, huge), ("/v1/jobs", {"url": CHAT, "body": huge})):
            declared = await gs.client.post(path, json=body)
            assert str(MAX_BODY) in assert_error(declared, 413, "payload_too_large")
            data = json.dumps(body).encode()
            pieces = [data[i : i + 8192] for i in range(0, len(data), 8192)]

            async def chunks(parts: list[bytes] = pieces) -> Any:
                for part in parts:
                    yield part

            headers = {"content-type": "application/json"}
            streamed = await gs.client.post(path, content=chunks(), headers=headers)
            assert "content-length" not in streamed.request.headers
            assert str(MAX_BODY) in assert_error(streamed, 413, "payload_too_large")


async def test_unknown_jobs_and_ended_jobs_answer_404_and_409(gs: InProcess) -> None:
    assert "job_nope" in assert_error(await gs.client.get("/v1/jobs/job_nope"), 404)
    assert_error(await gs.client.post("/v1/jobs/job_nope/cancel"), 404)
    assert_error(await gs.client.post("/v1/dlq/job_nope/replay"), 404)
    assert_error(await gs.client.get("/v1/jobs/job_nope/events"), 404)
    done = (await job(gs, chat_body("echo"))).json()["id"]
    await gs.queue.wait(done, 5)
    assert "already ended" in assert_error(await gs.client.delete(f"/v1/jobs/{done}"), 409)
    assert_error(await gs.client.post(f"/v1/dlq/{done}/replay"), 409)
    bad = await gs.client.get("/v1/jobs", params={"status": "bogus"})
    assert "status" in assert_error(bad, 400)


async def test_same_idempotency_key_gives_the_same_job(gs: InProcess) -> None:
    first = await job(gs, chat_body("echo", "once"), idempotency_key="k1")
    again = await job(gs, chat_body("echo", "something else"), idempotency_key="k1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]


async def test_list_filters_and_cursor_pagination(gs: InProcess) -> None:
    ids = [(await job(gs, chat_body("pager", f"page {i}"))).json()["id"] for i in range(7)]
    for job_id in ids:
        await gs.queue.wait(job_id, 5)
    seen, after, sizes = [], None, []
    while True:
        params: dict[str, Any] = {"model": "pager", "limit": 3}
        if after:
            params["after"] = after
        page = (await gs.client.get("/v1/jobs", params=params)).json()
        sizes.append(len(page["data"]))
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        after = page["next_cursor"]
    assert sizes == [3, 3, 1] and seen == sorted(ids, reverse=True)
    queued = await gs.client.get("/v1/jobs", params={"model": "pager", "status": "queued"})
    assert queued.json()["data"] == []
