"""The bodies of the OpenAI endpoints past chat and embeddings, as far as genspool checks them.

A remote model passes these endpoints through (:mod:`genspool.providers.endpoints`), so its
upstream decides every parameter; genspool checks only what no call can succeed without (the
fields each endpoint requires, of their type), so that a job missing one is a 400 naming it at
the door, or a batch line's error with its line number, rather than a failed job later. Unknown
parameters are kept and sent on.

A transcription's audio is a Files API id (``"file": "file-..."``): :func:`check_inputs` finds
it among the caller's files when the job is submitted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genspool.exceptions import InvalidRequest, NotFound
from genspool.files import Files
from genspool.providers.endpoints import (
    COMPLETIONS,
    IMAGES,
    MODERATIONS,
    RERANK,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    file_ref,
)

__all__ = ["ENDPOINT_BODIES", "check_inputs"]

#: Strict as the chat body is: a body is sent on exactly as it came, so nothing is converted.
_STRICT = ConfigDict(extra="allow", strict=True)
_Object = dict[str, Any]


class _Body(BaseModel):
    model_config = _STRICT
    model: str


class CompletionsBody(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, gt=0)


class ResponsesBody(_Body):
    input: str | list[_Object] = Field(min_length=1)


class ModerationsBody(_Body):
    input: str | list[str] | list[_Object] = Field(min_length=1)


class ImagesBody(_Body):
    prompt: str = Field(min_length=1)
    n: int | None = Field(None, ge=1, le=10)
    response_format: Literal["url", "b64_json"] | None = None


class SpeechBody(_Body):
    input: str = Field(min_length=1)
    voice: str | _Object
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(None, ge=0.25, le=4.0)


class TranscriptionBody(_Body):
    file: str = Field(
        pattern=r"^file-[A-Za-z0-9]+$", description="The audio: a Files API id of yours."
    )
    temperature: float | None = Field(None, ge=0, le=1)


class RerankBody(_Body):
    query: str
    documents: list[str | _Object] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)


#: The body schema of each endpoint genspool knows the shape of (beyond chat and embeddings).
ENDPOINT_BODIES: dict[str, type[BaseModel]] = {
    COMPLETIONS: CompletionsBody,
    RESPONSES: ResponsesBody,
    MODERATIONS: ModerationsBody,
    IMAGES: ImagesBody,
    SPEECH: SpeechBody,
    TRANSCRIPTIONS: TranscriptionBody,
    TRANSLATIONS: TranscriptionBody,
    RERANK: RerankBody,
}


async def check_inputs(files: Files | None, url: str, body: dict[str, Any], tenant: str) -> None:
    """Refuse a request whose input file is not one of ``tenant``'s (a 400 naming ``file``:
    another tenant's file is as unknown as a missing one)."""
    ref = file_ref(url, body)
    if ref is None:
        return
    if files is None:
        raise InvalidRequest(
            f"file: {url} reads its input from the Files API, which this server's store does"
            " not keep",
            param="file",
        )
    try:
        await files.get(ref, tenant)
    except NotFound:
        raise InvalidRequest(
            f"file: no file {ref!r} among yours; upload the audio first (POST /v1/files)",
            param="file",
        ) from None
