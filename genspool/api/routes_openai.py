"""The OpenAI-compatible surface: ``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/responses`` (with a ``file_search`` tool: an answer from vector stores with citations,
:mod:`genspool.rag.answer`).

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
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genspool.api.auth import Caller, Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.errors import error_response
from genspool.api.routes_jobs import JobCreate, build_job, check_stores, read_body
from genspool.api.routes_ops import breaker_states
from genspool.api.routes_prompts import rendered
from genspool.api.routes_push import SSE_HEADERS
from genspool.api.schemas import request_body
from genspool.api.validation import ChatBody, EmbeddingsBody, check_stream, streamed
from genspool.config import INTERNAL_MODELS
from genspool.core.events import Event, JobChanged, TokenDelta
from genspool.core.job import Job, JobStatus
from genspool.core.keys import Scope
from genspool.exceptions import InvalidRequest
from genspool.providers.base import CHAT, EMBEDDINGS
from genspool.providers.endpoints import RESPONSES

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
        if cfg.name not in INTERNAL_MODELS
    ]
    return {"object": "list", "data": data}


@router.post(
    "/chat/completions",
    summary="OpenAI chat completions, through the queue",
    openapi_extra=request_body(ChatBody),
)
@requires(Scope.SUBMIT, submits=True)
async def chat_completions(request: Request, svc: Svc, caller: Principal) -> Any:
    body, prompt = await rendered(svc, CHAT, await read_body(request, svc), caller.tenant)
    job = _build(svc, CHAT, body, caller, _idempotency_key(request, CHAT), prompt)
    if body.get("stream"):
        # Listening before the job is submitted: no token may be missed.
        events = svc.queue.subscribe([job.id], since=[job])
        stored = await _submit(svc, job)
        if stored is not job:  # a retried call: follow the first one's job
            await events.aclose()
            job, events = stored, svc.queue.subscribe([stored.id], since=[stored])
        return StreamingResponse(
            _chunks(svc, job, body, events), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return await _answer(svc, await _submit(svc, job))


@router.post(
    "/embeddings",
    summary="OpenAI embeddings, through the queue",
    openapi_extra=request_body(EmbeddingsBody),
)
@requires(Scope.SUBMIT, submits=True)
async def embeddings(request: Request, svc: Svc, caller: Principal) -> Any:
    body = await read_body(request, svc)
    job = _build(svc, EMBEDDINGS, body, caller, _idempotency_key(request, EMBEDDINGS))
    return await _answer(svc, await _submit(svc, job))


@router.post(
    "/responses",
    summary="OpenAI responses, through the queue; with a file_search tool, an answer from"
    " vector stores with file_citation annotations",
)
@requires(Scope.SUBMIT, submits=True)
async def responses(request: Request, svc: Svc, caller: Principal) -> Any:
    body, prompt = await rendered(svc, RESPONSES, await read_body(request, svc), caller.tenant)
    await check_stores(svc, RESPONSES, body, caller.tenant)
    job = _build(svc, RESPONSES, body, caller, _idempotency_key(request, RESPONSES), prompt)
    return await _answer(svc, await _submit(svc, job))


#: The longest ``Idempotency-Key`` header (the job's key is the route, a space, and it).
MAX_IDEMPOTENCY_KEY = 200


def _idempotency_key(request: Request, url: str) -> str | None:
    """The job's idempotency key for an ``Idempotency-Key`` header: a call retried with the
    same header waits on the first call's job instead of starting another. Scoped by route,
    so one key sent to both routes names two jobs."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} characters", param="Idempotency-Key"
        )
    return f"{url} {key}"


def _build(
    svc: Services,
    url: str,
    body: Any,
    caller: Caller,
    key: str | None = None,
    prompt: dict[str, Any] | None = None,
) -> Job:
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", param="body")
    if url == CHAT:
        streamed(body)  # the types of stream and stream_options, which the job does not keep
    stored = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    spec = JobCreate(url=url, body=stored, priority=INTERACTIVE_PRIORITY, idempotency_key=key)
    job = build_job(svc, spec, tenant=caller.tenant, scopes=caller.scopes, prompt=prompt)
    check_stream(svc.catalog.card(job.model), body)
    return job


async def _submit(svc: Services, job: Job) -> Job:
    """Submit ``job``, or find the job of an earlier call with its idempotency key (which
    must have been the same request)."""
    stored = await svc.queue.submit(job)
    if stored is not job and (stored.url, stored.body) != (job.url, job.body):
        raise InvalidRequest(
            f"Idempotency-Key: already used for a different request (job {stored.id}); use a"
            " new key for a new request",
            param="Idempotency-Key",
        )
    return stored


async def _answer(svc: Services, job: Job) -> Response:
    try:
        done = await svc.queue.outcome(job, svc.wait_timeout_s)
    except TimeoutError:
        return _still_running(job, svc.wait_timeout_s)
    if done.status == JobStatus.SUCCEEDED.value and done.result is not None:
        # orjson: an embedding is hundreds of floats, which the stdlib encoder is slow at.
        return Response(
            orjson.dumps(done.result["body"]),
            status_code=done.result.get("status_code", 200),
            media_type="application/json",
        )
    return _job_error(done)


#: The status of a call whose job has not ended within the wait. Not 408, 409, 429 or 5xx:
#: the OpenAI SDKs retry those on their own, and each retry would start another job (unless
#: it carries the same Idempotency-Key). 424: the answer depends on a job still under way.
STILL_RUNNING = 424


def _still_running(job: Job, waited_s: float) -> JSONResponse:
    where = f"/v1/jobs/{job.id}"
    message = (
        f"job {job.id} did not end within {waited_s:g} s (GENSPOOL_WAIT_TIMEOUT_S); it goes on:"
        f" read its result at GET {where}, or call again with the same Idempotency-Key header"
        " to wait on it again"
    )
    # x-should-retry: the OpenAI SDKs' own header, obeyed before the status is looked at.
    headers = {"Location": where, "x-should-retry": "false"}
    return error_response(STILL_RUNNING, message, "wait_timeout", headers=headers)


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
