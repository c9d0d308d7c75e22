"""Remote ``stream: true`` end to end: a real ``genspool serve`` with an ``openai`` model pointed
at a real upstream (a FastAPI app served by uvicorn on loopback, in a thread of this process)
that streams its answer a token at a time with pauses; the official ``openai`` SDK, streaming,
is the client. The first token reaches the client while the upstream is still generating, and
the stored answer is the one a plain call stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from genspool.providers.base import CHAT, Request
from genspool.providers.openai_http import OpenAIProvider
from tests.helpers.processes import Server, Spawner, free_port

TOKENS = ["The", " answer", " comes", " one", " token", " at", " a", " time", "."]
USAGE = {"prompt_tokens": 5, "completion_tokens": len(TOKENS), "total_tokens": 5 + len(TOKENS)}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}
ARGS = ['{"city"', ': "Par', 'is"}']
PAUSE_S = 0.15


class Upstream:
    """An OpenAI-compatible server that streams slowly. Model ``tools`` answers with a tool
    call; model ``cut`` breaks off its first stream after two tokens."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.finished_at: list[float] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self.app, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the upstream did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    async def chat(self, request: HTTPRequest) -> Any:
        body = await request.json()
        self.requests.append(body)
        model = body["model"]
        if not body.get("stream"):
            return JSONResponse(self.answer(model))
        cut = model == "cut" and sum(r["model"] == "cut" for r in self.requests) == 1
        events = self.events(model, bool(body.get("stream_options", {}).get("include_usage")))
        return StreamingResponse(self.paced(events, cut), media_type="text/event-stream")

    def answer(self, model: str) -> dict[str, Any]:
        tools = model == "tools"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if tools else "".join(TOKENS),
        }
        if tools:
            message["tool_calls"] = [
                {**CALL, "function": {"name": "lookup", "arguments": "".join(ARGS)}}
            ]
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": "tool_calls" if tools else "stop"}  # fmt: skip
        return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000,
                "model": model, "choices": [choice], "usage": USAGE}  # fmt: skip

    def events(self, model: str, include_usage: bool) -> list[dict[str, Any]]:
        head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        if model == "tools":
            first = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **CALL}]}
            out = [chunk(first)]
            out += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in ARGS
            ]
            out.append(chunk({}, "tool_calls"))
        else:
            out = [chunk({"role": "assistant", "content": ""})]
            out += [chunk({"content": t}) for t in TOKENS]
            out.append(chunk({}, "stop"))
        if include_usage:
            out.append({**head, "choices": [], "usage": USAGE})
        return out

    async def paced(self, events: list[dict[str, Any]], cut: bool) -> AsyncIterator[bytes]:
        for i, event in enumerate(events):
            if cut and i == 3:
                raise RuntimeError("the upstream breaks off its stream (on purpose)")
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            await asyncio.sleep(PAUSE_S)
        yield b"data: [DONE]\n\n"
        self.finished_at.append(time.monotonic())


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def remote(name: str, upstream: Upstream) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "options": {"base_url": upstream.url},
            "batching": {"max_wait_ms": 0}}  # fmt: skip


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def stored(server: Server, job_id: str) -> dict[str, Any]:
    job = server.wait(job_id)
    assert job["status"] == "succeeded", job
    body: dict[str, Any] = job["result"]["body"]
    return body


def test_tokens_arrive_while_the_upstream_generates_and_the_answer_is_stored_whole(
    spawner: Spawner, upstream: Upstream
) -> None:
    server = spawner.server([remote("slow", upstream)])
    messages = [{"role": "user", "content": "hi"}]
    first_token_at, finished_then, text, job_id = 0.0, 0, "", ""
    stream = sdk(server).chat.completions.create(
        model="slow", messages=messages, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    usage = None
    for chunk in stream:
        job_id = chunk.id.removeprefix("chatcmpl-")
        usage = chunk.usage or usage
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta and not first_token_at:
            first_token_at, finished_then = time.monotonic(), len(upstream.finished_at)
        text += delta or ""
    assert first_token_at and finished_then == 0, "the first token came after the upstream ended"
    assert upstream.finished_at and first_token_at < upstream.finished_at[0] - 3 * PAUSE_S
    assert text == "".join(TOKENS) and usage is not None and usage.completion_tokens == len(TOKENS)
    assert upstream.requests[0]["stream"] is True
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}

    # Nobody listens to a job submitted through /v1/jobs: one plain call, the same answer.
    plain = server.chat("slow", "hi")
    assert stored(server, plain["id"]) == stored(server, job_id) == upstream.answer("slow")
    assert "stream" not in upstream.requests[-1]


def test_tool_call_deltas_are_merged_as_a_plain_call_returns_them(
    spawner: Spawner, upstream: Upstream
) -> None:
    server = spawner.server([remote("tools", upstream)])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = {"model": "tools", "messages": [{"role": "user", "content": "weather?"}]}
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: {")]
    job_id = orjson.loads(events[0][6:])["id"].removeprefix("chatcmpl-")
    assert upstream.requests[0]["stream"] is True
    assert stored(server, job_id) == upstream.answer("tools")


def test_a_stream_cut_off_midway_is_retried_and_the_client_gets_each_token_once(
    spawner: Spawner, upstream: Upstream
) -> None:
    server = spawner.server([remote("cut", upstream)])
    stream = sdk(server).chat.completions.create(
        model="cut", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text == "".join(TOKENS)
    assert [r.get("stream") for r in upstream.requests] == [True, True]  # in-call retry


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_the_provider_relays_deltas_as_they_come_on_either_http_client(
    upstream: Upstream, client: str
) -> None:
    transport = httpx.AsyncHTTPTransport() if client == "httpx" else None  # httpx when given
    provider = OpenAIProvider("slow", base_url=upstream.url, transport=transport)
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    arrivals: list[tuple[str, int]] = []  # (text, upstream streams finished by then)
    sink = lambda text: arrivals.append((text, len(upstream.finished_at)))  # noqa: E731
    try:
        streamed = await provider.handle([Request(CHAT, body, sink, stream=True)])
        plain = await provider.handle([Request(CHAT, body, sink)])  # nobody listens
    finally:
        await provider.aclose()
    assert [text for text, _ in arrivals] == TOKENS and arrivals[0][1] == 0
    assert streamed == plain == [{**upstream.answer("slow"), "model": "slow"}]
    assert [r.get("stream") for r in upstream.requests] == [True, None]
