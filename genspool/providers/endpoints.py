"""The OpenAI endpoints past chat and embeddings that a remote model passes through, and what
passing them through takes beyond "JSON in, JSON out".

Most of them need nothing: the body goes to the remote as it came and the answer is stored as
it came (``/v1/completions``, ``/v1/responses``, ``/v1/moderations``, ``/v1/rerank``). Three
kinds need more, and this module is where that lives so the provider stays about HTTP:

* **An input file** (``/v1/audio/transcriptions``, ``/v1/audio/translations``): the job's body
  names the audio as ``"file": "file-..."``, a Files API id of the job's tenant, since a JSON
  job cannot hold the bytes; :func:`encode` reads the file and sends the call as
  ``multipart/form-data``, as OpenAI's own API takes it.
* **A binary answer** (``/v1/audio/speech``): raw audio is kept as a file of the job's tenant
  named ``{job_id}.{ext}`` and the result refers to it (:func:`kept`).
* **Images as base64** (``/v1/images/generations`` with ``b64_json``): each image is kept as a
  file and its ``b64_json`` replaced by ``file_id`` (:func:`images_kept`), so that a stored
  result never holds megabytes of base64 that every read of the job would carry.

A file written for an attempt whose result is then not stored (the worker died between the
two) is left behind: it belongs to the tenant and shows in its file list, like any upload.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

import orjson

from genspool._ids import random_hex
from genspool.exceptions import GenspoolError, ModelError, NotFound, PayloadTooLarge
from genspool.providers.base import Request, Response

__all__ = [
    "COMPLETIONS",
    "IMAGES",
    "MODERATIONS",
    "RERANK",
    "RESPONSES",
    "SPEECH",
    "TRANSCRIPTIONS",
    "TRANSLATIONS",
    "UPLOADS",
    "encode",
    "file_ref",
    "images_kept",
    "is_json",
    "kept",
]

COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
MODERATIONS = "/v1/moderations"
IMAGES = "/v1/images/generations"
SPEECH = "/v1/audio/speech"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"
RERANK = "/v1/rerank"

#: Endpoints whose body names its input as a file id, sent on as multipart/form-data.
UPLOADS = frozenset({TRANSCRIPTIONS, TRANSLATIONS})
#: What a result kept as a file says it is, by endpoint (OpenAI's name for the call).
_OBJECTS = {SPEECH: "audio.speech"}
#: Extensions of the content types a speech or image endpoint answers with; mimetypes knows
#: some of them under other names (``audio/mpeg`` is ``.mp2`` on some systems).
_EXTENSIONS = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/x-wav": "wav",
    "audio/wave": "wav", "audio/opus": "opus", "audio/ogg": "ogg", "audio/aac": "aac",
    "audio/flac": "flac", "audio/pcm": "pcm", "audio/L16": "pcm", "image/png": "png",
    "image/jpeg": "jpg", "image/webp": "webp",
}  # fmt: skip
#: The first bytes of the image formats OpenAI returns, to name a decoded image's file.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"RIFF", "image/webp"))  # fmt: skip

JSON = "application/json"


def file_ref(url: str, body: dict[str, Any]) -> str | None:
    """The file id a request's body names as its input, for the endpoints that take one."""
    ref = body.get("file") if url in UPLOADS else None
    return ref if isinstance(ref, str) else None


async def encode(request: Request, body: dict[str, Any]) -> tuple[bytes, str] | ModelError:
    """The bytes to send and their content type: JSON, or for an upload endpoint the form
    with the file's bytes; a ModelError when the file cannot be read."""
    ref = file_ref(request.url, body)
    if ref is None:
        return orjson.dumps(body), JSON
    if request.files is None:
        return _no_files(request.url)
    tenant = request.job.tenant if request.job is not None else "default"
    try:
        filename, data = await request.files.read(ref, tenant)
    except NotFound:
        return ModelError(f"file: {ref} is not a file of tenant {tenant}", retryable=False)
    except GenspoolError as exc:  # the blob store: it may come back
        return ModelError(f"file: {ref} cannot be read: {exc}")
    return _multipart(body, filename, data)


def _multipart(body: dict[str, Any], filename: str, data: bytes) -> tuple[bytes, str]:
    """``multipart/form-data`` as OpenAI's SDK sends it: a list as repeated ``name[]`` fields,
    an object as JSON, the file last."""
    boundary = f"genspool-{random_hex(16)}"
    parts: list[bytes] = []
    for name, value in body.items():
        if name == "file" or value is None:
            continue
        for field, item in _fields(name, value):
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'
            parts.append(head.encode() + item + b"\r\n")
    kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    quoted = filename.replace('"', "%22")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    )
    parts.append(head.encode() + data + b"\r\n" + f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _fields(name: str, value: Any) -> list[tuple[str, bytes]]:
    if isinstance(value, list):
        return [(f"{name}[]", _text(v)) for v in value]
    return [(name, _text(value))]


def _text(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)  # numbers and booleans as JSON spells them; objects as JSON


def _no_files(url: str) -> ModelError:
    return ModelError(
        f"{url} needs the Files API (an input file, or an answer kept as a file), which this"
        " worker's store does not keep; run it on SQLite or PostgreSQL, or set"
        " GENSPOOL_FILES_URL",
        retryable=False,
    )


def is_json(content_type: str) -> bool:
    """Whether an answer is JSON (a server that names no type is taken to mean JSON)."""
    return not content_type or "json" in content_type


async def kept(
    request: Request, content: bytes, content_type: str, model: str
) -> Response | ModelError:
    """An answer that is not JSON: text as ``{"text": ...}`` (a transcription asked for as
    text, srt or vtt), anything else kept as a file the result refers to."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("text/"):
        return {"object": "text", "text": content.decode(errors="replace"),
                "content_type": kind, "model": model}  # fmt: skip
    saved = await _save(request, content, kind, "")
    if isinstance(saved, ModelError):
        return saved
    return {"object": _OBJECTS.get(request.url, "file_output"), "file_id": saved,
            "content_type": kind, "bytes": len(content), "model": model}  # fmt: skip


async def images_kept(request: Request, answer: Response) -> Response | ModelError:
    """An images answer with each ``b64_json`` replaced by the ``file_id`` it is kept in."""
    items = answer.get("data")
    if request.url != IMAGES or not isinstance(items, list):
        return answer
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
            continue
        try:
            data = base64.b64decode(item["b64_json"], validate=True)
        except (binascii.Error, ValueError):
            why = f"data[{i}].b64_json: the remote sent invalid base64"
            return ModelError(why, retryable=False)
        kind = _sniff(data)
        saved = await _save(request, data, kind, f"-{i}")
        if isinstance(saved, ModelError):
            return saved
        del item["b64_json"]
        item.update(file_id=saved, content_type=kind, bytes=len(data))
    return answer


async def _save(request: Request, data: bytes, kind: str, suffix: str) -> str | ModelError:
    """Keep ``data`` as a file of the job's tenant, ``{job_id}{suffix}.{ext}``; its id."""
    if request.files is None:
        return _no_files(request.url)
    job = request.job
    stem = job.id if job is not None else f"output-{random_hex(8)}"
    name = f"{stem}{suffix}.{_extension(kind)}"
    try:
        return await request.files.save(
            data, tenant=job.tenant if job is not None else "default", filename=name
        )
    except GenspoolError as exc:  # the store failed: worth a retry; too large: not
        retry = not isinstance(exc, PayloadTooLarge)
        return ModelError(f"the answer could not be kept as a file: {exc}", retryable=retry)


def _extension(kind: str) -> str:
    if kind in _EXTENSIONS:
        return _EXTENSIONS[kind]
    guessed = mimetypes.guess_extension(kind) or ".bin"
    return guessed.removeprefix(".")


def _sniff(data: bytes) -> str:
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), "image/png")
