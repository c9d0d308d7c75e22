"""The OpenAI-compatible surface: ``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``.

These routes go through the same queue as ``/v1/jobs`` (so they are buffered and batched) and
wait for the job's result. ``stream: true`` turns the job's token events into
``chat.completion.chunk`` Server-Sent Events. If the client goes away, the job still finishes
and its result is kept.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.errors import error_response
from genspool.api.routes_jobs import JobCreate, build_job
from genspool.api.routes_ops import breaker_states
from genspool.api.routes_push import SSE_HEADERS
from genspool.api.validation import check_stream
from genspool.core.events import Event, JobChanged, TokenDelta
from genspool.core.job import Job, JobStatus
from genspool.core.keys import Scope
from genspool.exceptions import InvalidRequest
from genspool.providers.base import CHAT, EMBEDDINGS

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

#: Interactive calls run before bulk jobs of priority 0.
INTERACTIVE_PRIORITY = 10


@router.get("/models", summary="The served models")
@requires(Scope.READ)
async def list_models(svc: Svc) -> dict[str, Any]:
    breakers = await breaker_states(svc)
    data = [
        {
            "id": cfg.name,
            "object": "model",
            "created": 0,
            "owned_by": "genspool",
            "provider": cfg.provider,
            "context_window": cfg.context_window,
            "endpoints": sorted(svc.catalog.card(cfg.name).endpoints),
            "breaker": breakers[cfg.name],
        }
        for cfg in svc.catalog
    ]
    return {"object": "list", "data": data}


@router.post("/chat/completions", summary="OpenAI chat completions, through the queue")
@requires(Scope.SUBMIT, submits=True)
async def chat_completions(request: Request, svc: Svc, caller: Principal) -> Any:
    body = await _json_body(request)
    job = _build(svc, CHAT, body, caller.tenant)
    if body.get("stream"):
        # Listening before the job is submitted: no token may be missed.
        events = svc.queue.subscribe([job.id], since=[job])
        await svc.queue.submit(job)
        return StreamingResponse(
            _chunks(svc, job, body, events), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await _answer(svc, await svc.queue.submit(job))


@router.post("/embeddings", summary="OpenAI embeddings, through the queue")
@requires(Scope.SUBMIT, submits=True)
async def embeddings(request: Request, svc: Svc, caller: Principal) -> Any:
    job = _build(svc, EMBEDDINGS, await _json_body(request), caller.tenant)
    return await _answer(svc, await svc.queue.submit(job))


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON in the request body: {exc}") from exc


def _build(svc: Services, url: str, body: Any, tenant: str) -> Job:
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object")
    stored = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    spec = JobCreate(url=url, body=stored, priority=INTERACTIVE_PRIORITY)
    job = build_job(svc, spec, tenant=tenant)
    check_stream(svc.catalog.card(job.model), body)
    return job


async def _answer(svc: Services, job: Job) -> JSONResponse:
    done = await svc.queue.outcome(job, svc.wait_timeout_s)
    if done.status == JobStatus.SUCCEEDED.value and done.result is not None:
        return JSONResponse(done.result["body"], status_code=done.result.get("status_code", 200))
    return _job_error(done)


def _job_error(done: JobChanged) -> JSONResponse:
    err = done.error or {}
    code = str(err.get("code", done.status))
    status = {"cancelled": 409, "expired": 408, "model_timeout": 504}.get(code, 502)
    message = f"job {done.id} ended {done.status}: {err.get('message', 'no result')}"
    return error_response(status, message, code)


async def _chunks(
    svc: Services, job: Job, body: dict[str, Any], events: AsyncGenerator[Event, None]
) -> AsyncIterator[bytes]:
    chunk_id, created = f"chatcmpl-{job.id}", int(time.time())
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": job.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    sent = ""
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, TokenDelta):
                sent += event.delta
                yield chunk({"content": event.delta})
            elif isinstance(event, JobChanged) and event.ends:
                async for tail in _final(job, event, sent, chunk, include_usage):
                    yield tail
                break
    yield b"data: [DONE]\n\n"


async def _final(
    job: Job, done: JobChanged, sent: str, chunk: Any, include_usage: bool
) -> AsyncIterator[bytes]:
    if done.status != JobStatus.SUCCEEDED.value or done.result is None:
        yield b"data: " + bytes(_job_error(done).body) + b"\n\n"
        return
    answer = done.result["body"]
    choice = answer["choices"][0]
    content = choice["message"].get("content") or ""
    if content.startswith(sent) and len(content) > len(sent):
        # Token events from a worker in another process do not reach this one; send the rest.
        yield chunk({"content": content[len(sent) :]})
    if calls := choice["message"].get("tool_calls"):
        # Tool calls are not streamed as they are generated: they come whole, in one chunk.
        yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
    yield chunk({}, choice.get("finish_reason", "stop"))
    if include_usage:
        usage = {
            "id": f"chatcmpl-{job.id}",
            "object": "chat.completion.chunk",
            "created": answer.get("created", 0),
            "model": job.model,
            "choices": [],
            "usage": answer.get("usage"),
        }
        yield b"data: " + orjson.dumps(usage) + b"\n\n"
