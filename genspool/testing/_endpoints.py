"""The fault server's answers for the OpenAI endpoints past chat and embeddings
(:mod:`genspool.testing.faults` routes them here): valid bodies that compute nothing, each
derived from the request so that a test can tell which request an answer is for.

* ``/v1/completions``: the prompt echoed as the completion; ``/v1/responses``: the input's
  text echoed as an ``output_text``.
* ``/v1/moderations``: one result per input, flagged (``violence``) when it says "kill".
* ``/v1/rerank``: the documents by the words they share with the query.
* ``/v1/images/generations``: a 2x2 PNG made here (:func:`png`), as ``b64_json`` unless
  ``response_format`` is ``url``.
* ``/v1/audio/speech``: a few MP3-looking bytes (an ID3 header, a frame header, the input) as
  ``audio/mpeg`` (``wav`` asked: a RIFF header instead, as ``audio/wav``).
* ``/v1/audio/transcriptions`` and ``/translations``: a ``multipart/form-data`` upload
  (:func:`form`); the text says how many bytes of audio arrived, and from which file.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from base64 import b64encode
from typing import Any

from genspool.testing._scripts import words

__all__ = ["PATHS", "Answer", "answer", "form", "png", "speech_bytes"]

#: The endpoints answered here (besides chat and embeddings).
PATHS = frozenset({
    "/v1/completions", "/v1/responses", "/v1/moderations", "/v1/rerank",
    "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions",
    "/v1/audio/translations",
})  # fmt: skip
#: An answer: its content type and body (a dict is sent as JSON).
Answer = tuple[str, "bytes | dict[str, Any]"]
JSON = "application/json"


def answer(path: str, body: dict[str, Any]) -> Answer:
    model = str(body.get("model", "fault-model"))
    if path == "/v1/audio/speech":
        wav = body.get("response_format") == "wav"
        return ("audio/wav" if wav else "audio/mpeg"), speech_bytes(str(body.get("input")), wav)
    if path.startswith("/v1/audio/"):
        return JSON, _transcription(body)
    answers = {
        "/v1/completions": _completion,
        "/v1/responses": _response,
        "/v1/moderations": _moderation,
        "/v1/rerank": _rerank,
        "/v1/images/generations": _images,
    }
    return JSON, {**answers[path](body), "model": model}


def _id(prefix: str, text: str) -> str:
    return f"{prefix}-fault-{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    many = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str)
    prompts = prompt if many else [prompt]
    choices = [{"text": str(p), "index": i, "logprobs": None, "finish_reason": "stop"}
               for i, p in enumerate(prompts)]  # fmt: skip
    tokens = sum(words(p) for p in prompts)
    usage = {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens}
    return {"id": _id("cmpl", str(prompt)), "object": "text_completion",
            "created": int(time.time()), "choices": choices, "usage": usage}  # fmt: skip


def _response(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input", "")
    text = given if isinstance(given, str) else str(given[-1].get("content", "")) if given else ""
    content = [{"type": "output_text", "text": text, "annotations": []}]
    message = {"type": "message", "id": _id("msg", text), "status": "completed",
               "role": "assistant", "content": content}  # fmt: skip
    n = words(text)
    return {"id": _id("resp", text), "object": "response", "created_at": int(time.time()),
            "status": "completed", "output": [message],
            "usage": {"input_tokens": n, "output_tokens": n, "total_tokens": 2 * n}}  # fmt: skip


def _moderation(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input", "")
    texts = given if isinstance(given, list) else [given]
    results = []
    for text in texts:
        flagged = "kill" in str(text).lower()
        results.append({"flagged": flagged, "categories": {"violence": flagged},
                        "category_scores": {"violence": 0.97 if flagged else 0.01}})  # fmt: skip
    return {"id": _id("modr", str(given)), "results": results}


def _rerank(body: dict[str, Any]) -> dict[str, Any]:
    query = set(str(body.get("query", "")).lower().split())
    documents = body.get("documents") or []
    scored: list[dict[str, Any]] = []
    for i, doc in enumerate(documents):
        text = doc if isinstance(doc, str) else str(doc.get("text", ""))
        shared = len(query & set(text.lower().split()))
        scored.append({"index": i, "document": {"text": text},
                       "relevance_score": shared / max(1, len(query))})  # fmt: skip
    scored.sort(key=lambda r: -r["relevance_score"])
    top = body.get("top_n") or len(scored)
    tokens = sum(words(d) for d in documents)
    return {"id": _id("rerank", str(query)), "results": scored[:top],
            "usage": {"total_tokens": tokens}}  # fmt: skip


def _images(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n") or 1
    if body.get("response_format") == "url":
        data: list[dict[str, Any]] = [{"url": f"http://127.0.0.1/fault-{i}.png"} for i in range(n)]
    else:
        data = [{"b64_json": b64encode(png(i)).decode()} for i in range(n)]
    return {"created": int(time.time()), "data": data}


def _transcription(body: dict[str, Any]) -> dict[str, Any]:
    size, name = body.get("file_bytes", 0), body.get("file_name", "")
    return {"text": f"{size} bytes of audio from {name}",
            "usage": {"type": "tokens", "input_tokens": 1, "output_tokens": 6,
                      "total_tokens": 7}}  # fmt: skip


def png(shade: int = 0) -> bytes:
    """A 2x2 RGB PNG, its colour set by ``shade`` (so two images of one answer differ)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    pixel = bytes([shade % 256, 128, 255 - shade % 256])
    rows = b"".join(b"\x00" + pixel * 2 for _ in range(2))  # each row: filter 0, two pixels
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


def speech_bytes(text: str, wav: bool = False) -> bytes:
    """Bytes that look like the start of an MP3 (or a WAV) file, then ``text``."""
    if wav:
        return b"RIFF" + struct.pack("<I", 36 + len(text)) + b"WAVEfmt " + text.encode()
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + text.encode()


def form(raw: bytes, content_type: str) -> dict[str, Any]:
    """A ``multipart/form-data`` body as a request body: each field as text (a ``name[]``
    field as a list), the file as ``file_name`` and ``file_bytes`` (its size)."""
    boundary = content_type.partition("boundary=")[2].strip('"')
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")  # not strip(): data may end so
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = head.decode("latin-1")
        name = disposition.partition('name="')[2].partition('"')[0]
        if 'filename="' in disposition:
            fields["file_name"] = disposition.partition('filename="')[2].partition('"')[0]
            fields["file_bytes"] = len(value)
        elif name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(value.decode())
        else:
            fields[name] = value.decode()
    return fields
