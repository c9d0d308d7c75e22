"""Push: job events over Server-Sent Events and over a WebSocket.

Both deliver one JSON event per state change (``{"id", "status", ...}``, the terminal one with
``result`` or ``error``) and, for running chat jobs, ``{"id", "status": "running", "delta"}``
token events. A subscriber that arrives after a job ended gets its final event at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from genspool.api.auth import Principal, requires
from genspool.api.deps import Svc
from genspool.core.keys import Scope
from genspool.core.queue import Queue

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["push"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events of one job until it ends")
@requires(Scope.READ)
async def job_events(svc: Svc, caller: Principal, job_id: str) -> StreamingResponse:
    queue = svc.queue
    await queue.get(job_id, caller.sees)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        events = queue.subscribe([job_id], tenant=caller.sees)
        async with contextlib.aclosing(events):
            async for event in events:
                yield b"data: " + orjson.dumps(event.public()) + b"\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.websocket("/ws")
@requires(Scope.READ)
async def websocket(ws: WebSocket, svc: Svc, caller: Principal) -> None:
    """Send ``{"subscribe": ["<id>", ...]}`` (as often as you like); events arrive as JSON.
    Another tenant's job answers ``not_found``, like an unknown one. The API key goes in the
    ``Authorization`` header or, from a browser, in ``?token=``."""
    await ws.accept()
    queue = svc.queue
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sender = asyncio.create_task(_send_all(ws, outbox))
    feeds: set[asyncio.Task[None]] = set()
    try:
        while True:
            ids = _subscription(await ws.receive_text(), outbox)
            if ids:
                task = asyncio.create_task(_feed(queue, ids, outbox, caller.sees))
                feeds.add(task)
                task.add_done_callback(feeds.discard)
    except WebSocketDisconnect:
        pass
    finally:
        for task in (*feeds, sender):
            task.cancel()
        await asyncio.gather(*feeds, sender, return_exceptions=True)


def _subscription(text: str, outbox: asyncio.Queue[dict[str, Any]]) -> list[str]:
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
    queue: Queue, ids: list[str], outbox: asyncio.Queue[dict[str, Any]], tenant: str | None
) -> None:
    events = queue.subscribe(ids, tenant=tenant)
    async with contextlib.aclosing(events):
        async for event in events:
            outbox.put_nowait(event.public())


async def _send_all(ws: WebSocket, outbox: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        event = await outbox.get()
        await ws.send_text(orjson.dumps(event).decode())
