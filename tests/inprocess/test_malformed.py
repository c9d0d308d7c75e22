"""Malformed bodies at the door (issue 14): each is a 400 in the OpenAI error shape naming the
field, and nothing is stored, on every backend that stores jobs (each encodes them its own way:
SQLite JSON text, PostgreSQL jsonb, Redis and NATS orjson). A synchronous OpenAI call whose job
outlives the wait answers a status the OpenAI SDK does not retry, and a call retried with the
same ``Idempotency-Key`` waits on the first call's job."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest

from genspool.backends import JobFilter
from genspool.testing.inprocess import BASE_URL, InProcess, serve
from tests.helpers.api import CHAT, EMBEDDINGS, MODELS, assert_error, chat_body, slow_model

#: The kinds whose store is one server (a split queue writes through the same encoders).
KINDS = ["memory", "sqlite", "postgres", "redis", "nats"]
OK = json.dumps(chat_body("echo"))


def job(extra: str = "", body: str = OK) -> bytes:
    """A ``POST /v1/jobs`` body as text, so it may hold what ``json.dumps`` would not write."""
    return f'{{"url": "{CHAT}", "body": {body}{extra}}}'.encode()


def chat(extra: str = "", content: str = '"hi"') -> bytes:
    message = f'{{"role": "user", "content": {content}}}'
    return f'{{"model": "echo", "messages": [{message}]{extra}}}'.encode()


def nest(levels: int) -> str:
    return "[" * levels + "]" * levels


#: ``(name, raw body, the param the error must name)``: None names no field (the body as a
#: whole), and then the message must say what is wrong.
BAD_JOBS: list[tuple[str, bytes, str | None]] = [
    ("expires_at NaN", job(', "expires_at": NaN'), "expires_at"),
    ("expires_at Infinity", job(', "expires_at": Infinity'), "expires_at"),
    ("expires_at 1e400", job(', "expires_at": 1e400'), "expires_at"),
    ("expires_at in ms", job(f', "expires_at": {time.time() * 1000}'), "expires_at"),
    ("expires_at 1e300", job(', "expires_at": 1e300'), "expires_at"),
    ("metadata -Infinity", job(', "metadata": {"a": -Infinity}'), "metadata.a"),
    ("seed above 64 bits", job(body=chat(f', "seed": {2**70}').decode()), "body.seed"),
    ("seed at 2^63", job(body=chat(f', "seed": {2**63}').decode()), "body.seed"),
    ("metadata above 64 bits", job(f', "metadata": {{"n": {2**64}}}'), "metadata.n"),
    ("metadata below -2^63", job(f', "metadata": {{"n": [{-(2**63) - 1}]}}'), "metadata.n[0]"),
    ("metadata of 5000 digits", job(', "metadata": {"n": 1' + "0" * 5000 + "}"), "metadata.n"),
    ("lone surrogate", job(', "metadata": {"s": "a\\ud800b"}'), "metadata.s"),
    ("lone surrogate key", job(', "metadata": {"\\udc00": 1}'), "metadata"),
    (
        "lone surrogate content",
        job(body=chat(content='"\\ud83d"').decode()),
        "body.messages[0].content",
    ),
    (
        "nested 65 deep",
        job(f', "metadata": {{"a": {nest(63)}}}'),
        "metadata.a[0][0][0][0][0][0]...",
    ),
    ("nested 5000 deep", job(f', "metadata": {{"a": {nest(5000)}}}'), None),
    ("invalid UTF-8", job(body=chat(content='"XX"').decode()).replace(b"XX", b"\xff\xfe"), None),
    ("stream true", job(body=json.dumps({**chat_body("echo"), "stream": True})), "body.stream"),
    ("stream 'yes'", job(body=json.dumps({**chat_body("echo"), "stream": "yes"})), "stream"),
    ("messages not a list", job(body='{"model": "echo", "messages": "hi"}'), "messages"),
    ("not JSON", b'{"url": "' + CHAT.encode(), None),
    ("empty", b"", None),
]

BAD_CALLS: list[tuple[str, str, bytes, str | None]] = [
    (
        "stream_options a string",
        CHAT,
        chat(', "stream": true, "stream_options": "x"'),
        "stream_options",
    ),
    ("stream_options a number", CHAT, chat(', "stream_options": 5'), "stream_options"),
    ("stream_options without stream", CHAT, chat(', "stream_options": {}'), "stream_options"),
    (
        "include_usage a string",
        CHAT,
        chat(', "stream": true, "stream_options": {"include_usage": "yes"}'),
        "stream_options.include_usage",
    ),
    ("stream a string", CHAT, chat(', "stream": "yes"'), "stream"),
    ("stream a number", CHAT, chat(', "stream": 1'), "stream"),
    ("messages a string", CHAT, b'{"model": "echo", "messages": "hi"}', "messages"),
    ("messages an object", CHAT, b'{"model": "echo", "messages": {}}', "messages"),
    ("content a number", CHAT, chat(content="5"), "messages[0].content"),
    ("role unknown", CHAT, b'{"model": "echo", "messages": [{"role": "x"}]}', "messages[0].role"),
    ("temperature a string", CHAT, chat(', "temperature": "0.5"'), "temperature"),
    ("temperature NaN", CHAT, chat(', "temperature": NaN'), "temperature"),
    ("max_tokens a boolean", CHAT, chat(', "max_tokens": true'), "max_tokens"),
    ("seed a float", CHAT, chat(', "seed": 1.5'), "seed"),
    ("seed above 64 bits", CHAT, chat(f', "seed": {2**70}'), "seed"),
    ("metadata not strings", CHAT, chat(', "metadata": {"k": 1}'), "metadata.k"),
    ("user a number", CHAT, chat(', "user": 5'), "user"),
    ("stop a number", CHAT, chat(', "stop": 5'), "stop"),
    ("lone surrogate", CHAT, chat(content='"\\udfff"'), "messages[0].content"),
    (
        "invalid UTF-8",
        CHAT,
        b'{"model": "echo", "messages": [{"role": "user", "content": "\xc3"}]}',
        None,
    ),
    ("nested 5000 deep", CHAT, chat(f', "metadata": {nest(5000)}'), None),
    (
        "nested 65 deep",
        CHAT,
        chat(f', "metadata": {{"a": {nest(64)}}}'),
        "metadata.a[0][0][0][0][0][0]...",
    ),
    ("an array", CHAT, b"[1, 2]", "body"),
    ("input a number", EMBEDDINGS, b'{"model": "echo", "input": 5}', "input"),
    ("input lone surrogate", EMBEDDINGS, b'{"model": "echo", "input": "\\ud800"}', "input"),
    (
        "dimensions a string",
        EMBEDDINGS,
        b'{"model": "echo", "input": "x", "dimensions": "3"}',
        "dimensions",
    ),
    ("input Infinity", EMBEDDINGS, b'{"model": "echo", "input": [Infinity]}', "input[0]"),
]


@pytest.fixture(params=KINDS)
async def door(
    request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]
) -> AsyncIterator[InProcess]:
    """The API over a fresh namespace of one backend kind; no worker, so every job it stored
    stays there to be seen."""
    async with serve(MODELS, url=namespaced_url(request.param)) as gs:
        try:
            yield gs
        finally:
            await gs.queue.storage.drop()


async def stored(gs: InProcess) -> list[str]:
    return [j.id for j in await gs.queue.list_jobs(JobFilter(limit=100))]


def refused(response: httpx.Response, param: str | None, case: str) -> None:
    """A 400 in the OpenAI shape whose param (or, for the body as a whole, message) names
    what is wrong."""
    assert response.status_code == 400, (case, response.status_code, response.text)
    message = assert_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["param"] == param, (case, response.json())
    if param is not None and not param.endswith("..."):
        assert message.startswith(param) or f"{param}:" in message, (case, message)


async def test_every_malformed_job_is_a_400_naming_the_field_and_nothing_is_stored(
    door: InProcess,
) -> None:
    for case, raw, param in BAD_JOBS:
        response = await door.client.post("/v1/jobs", content=raw, headers=JSON)
        refused(response, param, case)
        assert await stored(door) == [], case
    good = await door.client.post("/v1/jobs", content=job(f', "metadata": {{"n": {2**63 - 1}}}'))
    assert good.status_code == 202, good.text  # the edges themselves are kept
    assert await stored(door) == [good.json()["id"]]
    again = (await door.client.get(f"/v1/jobs/{good.json()['id']}")).json()
    assert again["metadata"]["n"] == 2**63 - 1


async def test_every_malformed_openai_call_is_a_400_naming_the_field_and_nothing_is_stored(
    door: InProcess,
) -> None:
    for case, route, raw, param in BAD_CALLS:
        refused(await door.client.post(route, content=raw, headers=JSON), param, case)
        assert await stored(door) == [], case


JSON = {"content-type": "application/json"}


async def test_the_depth_limit_is_a_setting() -> None:
    async with serve(MODELS, max_json_depth=8) as gs:
        # The job is level 1, metadata 2, then six arrays: 8 levels.
        ok = await gs.client.post("/v1/jobs", content=job(f', "metadata": {{"a": {nest(6)}}}'))
        assert ok.status_code == 202, ok.text
        deep = await gs.client.post("/v1/jobs", content=job(f', "metadata": {{"a": {nest(7)}}}'))
        assert "deeper than 8 levels" in assert_error(deep, 400)


async def test_large_floats_are_kept_and_large_integer_literals_refused() -> None:
    async with serve(MODELS) as gs:
        ok = await gs.client.post("/v1/jobs", content=job(', "metadata": {"f": 1.5e19}'))
        assert ok.status_code == 202, ok.text
        big = await gs.client.post(
            "/v1/jobs", content=job(', "metadata": {"i": 15000000000000000000}')
        )
        assert assert_error(big, 400).startswith("metadata.i: 15000000000000000000 is outside")


# -- a wait that times out ------------------------------------------------------------------


async def test_a_wait_that_times_out_answers_in_the_openai_shape_with_a_status_not_retried() -> (
    None
):
    async with serve([slow_model(3000)], worker=True, wait_timeout_s=0.2) as gs:
        response = await gs.client.post(CHAT, json=chat_body("slow"))
        message = assert_error(response, 424, "wait_timeout")
        (job_id,) = await stored(gs)
        assert job_id in message and response.headers["location"] == f"/v1/jobs/{job_id}"
        assert response.headers["x-should-retry"] == "false"
        assert (await gs.client.get(f"/v1/jobs/{job_id}")).json()["status"] != "failed"


async def test_the_openai_sdk_makes_one_call_and_one_job_for_a_wait_that_times_out() -> None:
    async with serve([slow_model(3000)], worker=True, wait_timeout_s=0.2) as gs:
        transport = httpx.ASGITransport(app=gs.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            sdk = openai.AsyncOpenAI(
                base_url=f"{BASE_URL}/v1", api_key="none", http_client=http, max_retries=2
            )
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(
                    model="slow", messages=[{"role": "user", "content": "hi"}]
                )
        assert caught.value.status_code == 424
        assert len(await stored(gs)) == 1  # not three: the SDK did not retry


async def test_a_call_retried_with_the_same_idempotency_key_waits_on_the_first_job() -> None:
    async with serve([slow_model(600)], worker=True, wait_timeout_s=0.1) as gs:
        key = {"Idempotency-Key": "call-1"}
        first = await gs.client.post(CHAT, json=chat_body("slow", "once"), headers=key)
        (job_id,) = await stored(gs)
        assert job_id in assert_error(first, 424, "wait_timeout")
        await gs.queue.wait(job_id, 10)
        again = await gs.client.post(CHAT, json=chat_body("slow", "once"), headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["choices"][0]["message"]["content"] == "once"
        assert await stored(gs) == [job_id]
        other = await gs.client.post(CHAT, json=chat_body("slow", "twice"), headers=key)
        assert assert_error(other, 400).startswith("Idempotency-Key: already used")
        emb = await gs.client.post(EMBEDDINGS, json={"model": "slow", "input": "x"}, headers=key)
        assert emb.status_code != 400, emb.text  # the same key on another route: another job
        assert len(await stored(gs)) == 2


async def test_a_streamed_call_retried_with_the_same_key_follows_the_first_job() -> None:
    async with serve([slow_model(50)], worker=True) as gs:
        key = {"Idempotency-Key": "stream-1"}
        body = {**chat_body("slow", "streamed"), "stream": True}
        texts = [(await gs.client.post(CHAT, json=body, headers=key)).text for _ in range(2)]
        assert all('"streamed"' in t or "streamed" in t for t in texts), texts
        assert all(t.endswith("data: [DONE]\n\n") for t in texts)
        assert len(await stored(gs)) == 1
