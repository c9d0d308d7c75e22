"""The Files API, wire-compatible with OpenAI's: upload, list, retrieve, content, delete.

An upload is parsed as it arrives (:mod:`genspool.api.formstream`) and its file part streamed
to the blob store through a :class:`~genspool.files.FileWriter`, bounded by
``GENSPOOL_MAX_FILE_BYTES`` (the app's body limit does not apply to this route): past it the
answer is 413 and nothing is left behind. Every route is tenant-scoped: another tenant's file,
like an expired or deleted one, is 404 everywhere (an admin key reaches every tenant's).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.formstream import FileData, FileEnd, FileStart, FormField, FormStream
from genspool.core.keys import Scope
from genspool.core.roles import FileObject
from genspool.exceptions import ConfigError, GenspoolError, InvalidRequest, PayloadTooLarge
from genspool.files import UPLOAD_PURPOSES, Files, FileWriter
from genspool.files.service import MAX_LIST_LIMIT, check_filename, check_purpose

__all__ = ["UPLOAD", "file_json", "router"]

router = APIRouter(prefix="/v1", tags=["files"])
UPLOAD = "/v1/files"

#: OpenAI's bounds of ``expires_after[seconds]``: an hour to 30 days.
MIN_EXPIRES_AFTER_S, MAX_EXPIRES_AFTER_S = 3600, 2_592_000
FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
#: What a form may add to its file's bytes (boundaries, part headers, the text fields).
FORM_SLACK = 64 * 1024
#: How much of a refused upload is still read, so that the client gets to read the answer.
DRAIN_BYTES = 4 * 1024 * 1024


class FilesUnavailable(ConfigError):
    """The deployment's store keeps no files (a Redis or NATS server alone)."""

    status_code = 501
    code = "files_unavailable"


def _files(svc: Services) -> Files:
    if svc.files is None:
        raise FilesUnavailable(
            "this deployment keeps no files: its store is a Redis or NATS server alone; run with"
            " GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL set to"
            " the Redis or NATS server (the queue)"
        )
    return svc.files


def file_json(f: FileObject) -> dict[str, Any]:
    """A file as OpenAI's API shows it, and its SHA-256."""
    return {
        "id": f.id, "object": "file", "bytes": f.bytes, "created_at": int(f.created_at),
        "expires_at": None if f.expires_at is None else int(f.expires_at),
        "filename": f.filename, "purpose": f.purpose, "status": f.status,
        "status_details": None, "sha256": f.sha256,
    }  # fmt: skip


_FORM_SCHEMA = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {
            "type": "integer",
            "minimum": MIN_EXPIRES_AFTER_S,
            "maximum": MAX_EXPIRES_AFTER_S,
        },
    },
}
_UPLOAD_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}
}


class _Upload:
    """The state of one upload while its form streams in."""

    def __init__(self, files: Files, tenant: str) -> None:
        self.files, self.tenant = files, tenant
        self.fields: dict[str, str] = {}
        self.writer: FileWriter | None = None
        self.filename: str | None = None
        self.complete = False

    async def take(self, event: FormField | FileStart | FileData | FileEnd) -> None:
        if isinstance(event, FileData):
            assert self.writer is not None  # FormStream sends FileStart first
            await self.writer.write(event.data)
        elif isinstance(event, FormField):
            self._field(event)
        elif isinstance(event, FileStart):
            if self.writer is not None:
                raise InvalidRequest("file: one file per upload", param="file")
            self.filename = check_filename(event.filename or "")
            self.writer = await self.files.open(tenant=self.tenant)
        else:
            self.complete = True

    def _field(self, field: FormField) -> None:
        if field.name not in FIELDS:
            raise InvalidRequest(
                f"{field.name or 'a form field'}: unknown field; the fields are file,"
                f" {', '.join(FIELDS)}",
                param=field.name or None,
            )
        if field.name in self.fields:
            raise InvalidRequest(f"{field.name}: given twice", param=field.name)
        if field.name == "purpose":
            check_purpose(field.value, UPLOAD_PURPOSES)
        self.fields[field.name] = field.value

    async def finish(self) -> FileObject:
        if self.writer is None or not self.complete or self.filename is None:
            raise InvalidRequest(
                "file: missing; send the file in a form field named file", param="file"
            )
        if "purpose" not in self.fields:
            raise InvalidRequest(
                f"purpose: missing; one of {', '.join(UPLOAD_PURPOSES)}", param="purpose"
            )
        return await self.writer.commit(
            filename=self.filename,
            purpose=self.fields["purpose"],
            expires_after_s=_expires_after(self.fields),
        )

    async def abort(self) -> None:
        if self.writer is not None:
            await self.writer.abort()


def _expires_after(fields: dict[str, str]) -> float | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor]: must be created_at (with expires_after[seconds])",
            param="expires_after[anchor]",
        )
    if (
        seconds is None
        or not seconds.strip().isdigit()
        or not (MIN_EXPIRES_AFTER_S <= int(seconds) <= MAX_EXPIRES_AFTER_S)
    ):
        raise InvalidRequest(
            f"expires_after[seconds]: a whole number of seconds from {MIN_EXPIRES_AFTER_S}"
            f" (an hour) to {MAX_EXPIRES_AFTER_S} (30 days), not {seconds!r}",
            param="expires_after[seconds]",
        )
    return float(int(seconds))


def _check_declared(request: Request, files: Files) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > files.max_bytes + FORM_SLACK:
        raise PayloadTooLarge(
            f"the upload is {declared} bytes, over the {files.max_bytes}-byte limit of one file"
            " (GENSPOOL_MAX_FILE_BYTES); nothing was stored",
            param="file",
        )


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read a little more of a refused body, so that the client, still sending, reads the
    answer rather than a reset connection; a longer rest is left (the connection closes)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > DRAIN_BYTES:
            return


@router.post(
    "/files", summary="Upload a file (multipart: file, purpose)", openapi_extra=_UPLOAD_BODY
)
@requires(Scope.SUBMIT, submits=True)
async def upload_file(request: Request, svc: Svc, caller: Principal) -> JSONResponse:
    upload = _Upload(_files(svc), caller.tenant)
    chunks = request.stream()
    try:
        _check_declared(request, upload.files)
        form = FormStream(request.headers.get("content-type", ""), file_field="file")
        async for chunk in chunks:
            for event in form.feed(chunk):
                await upload.take(event)
        for event in form.close():
            await upload.take(event)
        record = await upload.finish()
    except GenspoolError:
        await upload.abort()
        with contextlib.suppress(Exception):  # a client gone meanwhile: nothing to read
            await _drain(chunks)
        raise
    except BaseException:
        await upload.abort()
        raise
    return JSONResponse(file_json(record))


@router.get("/files", summary="Files, newest first; page with ?after=<last id>")
@requires(Scope.READ)
async def list_files(
    svc: Svc,
    caller: Principal,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    found = await _files(svc).page(
        caller.sees, purpose=purpose, after=after, limit=limit, order=order
    )
    data = [file_json(f) for f in found.data]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": found.has_more,
    }


@router.get("/files/{file_id}", summary="A file's record")
@requires(Scope.READ)
async def retrieve_file(svc: Svc, caller: Principal, file_id: str) -> dict[str, Any]:
    return file_json(await _files(svc).get(file_id, caller.sees))


@router.get(
    "/files/{file_id}/content",
    summary="A file's bytes, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
@requires(Scope.READ)
async def file_content(svc: Svc, caller: Principal, file_id: str) -> StreamingResponse:
    record, chunks = await _files(svc).content(file_id, caller.sees)
    headers = {
        "Content-Length": str(record.bytes),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}",
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


@router.delete("/files/{file_id}", summary="Delete a file (its record and its bytes)")
@requires(Scope.SUBMIT)
async def delete_file(svc: Svc, caller: Principal, file_id: str) -> dict[str, Any]:
    record = await _files(svc).delete(file_id, caller.sees)
    return {"id": record.id, "object": "file", "deleted": True}
