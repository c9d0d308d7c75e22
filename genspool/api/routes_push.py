"""Push: job events over Server-Sent Events and over a WebSocket.

Both deliver one JSON event per state change (``{"id", "status", ...}``, the terminal one with
``result`` or ``error``) and, for running chat jobs, ``{"id", "status": "running", "delta"}``
token events. A subscriber that arrives after a job ended gets its final event at once.
When the server shuts down (:mod:`genspool.api.shutdown`), a WebSocket is closed with code
1001 and a reason, and an SSE stream ends with a comment line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from genspool.api.auth import Principal, requires
from genspool.api.deps import Svc
from genspool.api.shutdown import CLOSE_REASON, GOING_AWAY, SSE_CLOSING, shutdown_of
from genspool.core.keys import Scope
from genspool.core.queue import Queue

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["push"])

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events of one job until it ends")
@requires(Scope.READ)
async def job_events(
    request: Request, svc: Svc, caller: Principal, job_id: str
) -> StreamingResponse:
    queue = svc.queue
    await queue.get(job_id, caller.sees)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        with shutdown.push() as closing:
            events = queue.subscribe([job_id], tenant=caller.sees)
            async with contextlib.aclosing(events):
                async for event in _until(closing, events):
                    yield b"data: " + orjson.dumps(event.public()) + b"\n\n"
            if closing.is_set():
                yield SSE_CLOSING

    shutdown = shutdown_of(request)
    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _until(closing: asyncio.Event, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """``events`` until they end or ``closing`` is set (the server shuts down)."""
    stop = asyncio.ensure_future(closing.wait())
    try:
        while not closing.is_set():
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stop.cancel()


@router.websocket("/ws")
@requires(Scope.READ)
async def websocket(ws: WebSocket, svc: Svc, caller: Principal) -> None:
    """Send ``{"subscribe": ["<id>", ...]}`` (as often as you like); events arrive as JSON.
    Another tenant's job answers ``not_found``, like an unknown one. The API key goes in the
    ``Authorization`` header or, from a browser, in ``?token=``."""
    await ws.accept()
    queue = svc.queue
    outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    sender = asyncio.create_task(_send_all(ws, outbox))
    feeds: set[asyncio.Task[None]] = set()
    with shutdown_of(ws).push() as closing:
        watcher = asyncio.create_task(_close_on(closing, outbox))
        try:
            await _receive_all(ws, queue, outbox, feeds, caller.sees)
        finally:
            for task in (*feeds, sender, watcher):
                task.cancel()
            await asyncio.gather(*feeds, sender, watcher, return_exceptions=True)


async def _receive_all(
    ws: WebSocket,
    queue: Queue,
    outbox: asyncio.Queue[dict[str, Any] | None],
    feeds: set[asyncio.Task[None]],
    tenant: str | None,
) -> None:
    try:
        while True:
            ids = _subscription(await ws.receive_text(), outbox)
            if ids:
                task = asyncio.create_task(_feed(queue, ids, outbox, tenant))
                feeds.add(task)
                task.add_done_callback(feeds.discard)
    except WebSocketDisconnect:
        pass


async def _close_on(closing: asyncio.Event, outbox: asyncio.Queue[dict[str, Any] | None]) -> None:
    await closing.wait()
    outbox.put_nowait(None)  # after the events already queued: the sender closes


def _subscription(text: str, outbox: asyncio.Queue[dict[str, Any] | None]) -> list[str]:
    try:
        message = orjson.loads(text)
        ids = message["subscribe"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        outbox.put_nowait(
            {
                "error": {
                    "code": "invalid_message",
                    "message": 'send {"subscribe": ["<job id>", ...]} as a JSON text message',
                }
            }
        )
        return []
    return ids


async def _feed(
    queue: Queue, ids: list[str], outbox: asyncio.Queue[dict[str, Any] | None], tenant: str | None
) -> None:
    events = queue.subscribe(ids, tenant=tenant)
    async with contextlib.aclosing(events):
        async for event in events:
            outbox.put_nowait(event.public())


async def _send_all(ws: WebSocket, outbox: asyncio.Queue[dict[str, Any] | None]) -> None:
    while (event := await outbox.get()) is not None:
        await ws.send_text(orjson.dumps(event).decode())
    await ws.close(GOING_AWAY, CLOSE_REASON)
