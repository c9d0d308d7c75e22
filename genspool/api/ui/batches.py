"""``/ui/batches``: batches with their progress (lines completed and failed of the total, and
the rate), one batch with its output and error files and Cancel, and an upload form that
makes one: a JSONL file, an endpoint and a completion window.

Everything goes through the services the Batch and Files APIs use (:class:`~genspool.batches.
Batches`, :class:`~genspool.files.Files`) with their tenant checks: another tenant's batch or
file is a 404. The upload needs ``submit``, as ``POST /v1/files`` and ``POST /v1/batches`` do,
is charged against the key's rate limit as they are, and is bounded by the API's body limit
(``GENSPOOL_MAX_BODY_BYTES``; larger files go through the API or ``genspool batches``). Files
download through ``/ui/files/{id}`` with the login cookie (``read``, the tenant's own only).

A batch that has not ended polls its progress every second; the list polls its table every
2 s while one of its batches runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.ui.common import Progress, charge, cursor, go_to, need
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.batches import Batches
from genspool.batches.service import parse_window
from genspool.core.batch import Batch
from genspool.core.keys import Scope
from genspool.exceptions import InvalidRequest
from genspool.files import Files

__all__ = ["PAGE", "progress_of", "router"]

router = APIRouter(include_in_schema=False)

PAGE = 25
_READ_CHUNK = 64 * 1024
WINDOWS = ("1h", "24h", "7d")


def _batches(request: Request) -> Batches:
    return need(services(request).batches, "batches")


def _files(request: Request) -> Files:
    return need(services(request).files, "files")


def progress_of(b: Batch, now: float) -> Progress:
    ended = b.completed_at or b.failed_at or b.cancelled_at or b.expired_at or b.finalizing_at
    return Progress.of(b.completed, b.failed, b.total or None, started=b.in_progress_at,
                       ended_at=ended, now=now)  # fmt: skip


def _table(request: Request, found: list[Batch], after: str | None, more: bool) -> dict[str, Any]:
    now = services(request).queue.clock()
    return {
        "batches": found,
        "progress": {b.id: progress_of(b, now) for b in found},
        "after": after,
        "next_after": found[-1].id if more and found else None,
        "live": any(not b.terminal for b in found),
        "now": now,
    }


async def _page(request: Request, caller: Caller, after: str | None) -> dict[str, Any]:
    found = await _batches(request).page(caller.sees, after=cursor(after), limit=PAGE)
    return _table(request, found.data, after, found.has_more)


@router.get("/batches")
@ui_requires(Scope.READ)
async def batches(request: Request, caller: UiCaller, after: str | None = None) -> Response:
    table = await _page(request, caller, after)
    endpoints = sorted(_batches(request).endpoints())
    limit = services(request).max_body_bytes
    return await render(
        request, "batches.html", caller, **table, endpoints=endpoints, windows=WINDOWS,
        max_upload=limit, max_upload_mb=f"{limit / 1_048_576:.3g}",
    )  # fmt: skip


@router.get("/batches/table")
@ui_requires(Scope.READ)
async def table(request: Request, caller: UiCaller, after: str | None = None) -> Response:
    found = await _page(request, caller, after)
    return await render(request, "_batches_table.html", caller, **found)


async def _detail(request: Request, caller: Caller, b: Batch, template: str) -> Response:
    now = services(request).queue.clock()
    return await render(
        request, template, caller, batch=b, p=progress_of(b, now), now=now,
    )  # fmt: skip


@router.get("/batches/{batch_id}")
@ui_requires(Scope.READ)
async def batch(request: Request, caller: UiCaller, batch_id: str) -> Response:
    b = await _batches(request).get(batch_id, caller.sees)
    return await _detail(request, caller, b, "batch.html")


@router.get("/batches/{batch_id}/progress")
@ui_requires(Scope.READ)
async def progress(request: Request, caller: UiCaller, batch_id: str) -> Response:
    b = await _batches(request).get(batch_id, caller.sees)
    return await _detail(request, caller, b, "_batch_progress.html")


@router.post("/batches/{batch_id}/cancel")
@ui_requires(Scope.SUBMIT)
async def cancel(request: Request, caller: UiCaller, batch_id: str) -> Response:
    b = await _batches(request).cancel(batch_id, caller.sees)
    return await _detail(request, caller, b, "_batch_progress.html")


@router.post("/batches")
@ui_requires(Scope.SUBMIT)
async def upload(request: Request, caller: UiCaller) -> Response:
    """The form's file stored (purpose ``batch``) and a batch made of it; then its page."""
    batches, files = _batches(request), _files(request)
    form = await request.form()
    endpoint, window, upload = form.get("endpoint"), form.get("completion_window"), form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidRequest("file: choose a JSONL file of requests, one per line", param="file")
    if not isinstance(endpoint, str) or endpoint not in batches.endpoints():
        served = ", ".join(sorted(batches.endpoints()))
        raise InvalidRequest(
            f"endpoint: {str(endpoint)[:80]!r} is not one of {served}", param="endpoint"
        )
    window = window.strip() if isinstance(window, str) else ""
    parse_window(window)
    await charge(request, caller)
    record = await files.create(
        _chunks(upload), tenant=caller.tenant, filename=upload.filename, purpose="batch"
    )
    try:
        made = await batches.create(
            tenant=caller.tenant, input_file_id=record.id, endpoint=endpoint,
            completion_window=window, scopes=tuple(sorted(caller.scopes)),
        )  # fmt: skip
    except BaseException:
        await files.delete(record.id, caller.tenant)
        raise
    return go_to(request, f"/batches/{made.id}")


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_READ_CHUNK):
        yield chunk


@router.get("/files/{file_id}")
@ui_requires(Scope.READ)
async def download(request: Request, caller: UiCaller, file_id: str) -> Response:
    """A file's bytes (a batch's or a run's output), as ``GET /v1/files/{id}/content``."""
    record, chunks = await _files(request).content(file_id, caller.sees)
    headers = {
        "Content-Length": str(record.bytes),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}",
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)
