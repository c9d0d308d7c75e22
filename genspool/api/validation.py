"""Validation at the door: a request that cannot succeed never reaches the queue.

Checks the endpoint, the model, the body's fields (by endpoint) and the prompt size against the
model's context window, with the model's own tokenizer. Each failure is an
:class:`~genspool.exceptions.InvalidRequest` whose message names the field and what to fix.

Everything is read from the model's card (:class:`~genspool.providers.plugins.ModelCard`): no
provider is built and no weights are loaded here. The prompt is tokenized once, here; the count
goes on with the job so the worker need not tokenize it again to account for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.config import ModelConfig
from genspool.exceptions import ContextWindowExceeded, InvalidRequest
from genspool.providers.base import CHAT, EMBEDDINGS
from genspool.providers.plugins import ModelCard
from genspool.runtime.catalog import ModelCatalog

__all__ = ["Checked", "describe", "describe_request_error", "max_tokens_of", "validate_request"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="only n=1 is supported")
    stream: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, gt=0)


class _AnyBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str


SCHEMAS: dict[str, type[BaseModel]] = {CHAT: ChatBody, EMBEDDINGS: EmbeddingsBody}


def describe(exc: ValidationError, prefix: str = "") -> str:
    """``field.path: what is wrong`` for the first errors of a pydantic validation."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        parts.append(f"{loc or 'body'}: {err['msg']}")
    return "; ".join(parts)


def max_tokens_of(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if value is not None else None


class Checked(NamedTuple):
    config: ModelConfig
    #: Prompt tokens by the model's tokenizer; None when its card cannot count them.
    prompt_tokens: int | None


def validate_request(models: ModelCatalog, url: str, body: Any) -> Checked:
    """Return the model's config and the prompt's size, or raise what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", param="body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("body.model: required, the name of a served model", param="model")
    cfg = models.config(model)
    card = models.card(model)
    if url not in card.endpoints:
        served = ", ".join(sorted(card.endpoints))
        raise InvalidRequest(f"url: model {model} serves {served}, not {url}", param="url")
    try:
        SCHEMAS.get(url, _AnyBody).model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc, "body"), param="body") from exc
    if card.dimensions is not None and body.get("dimensions") not in (None, card.dimensions):
        raise InvalidRequest(f"body.dimensions: {model} returns {card.dimensions} dimensions only")
    counts = card.count(url, body) if card.count is not None else None
    if counts is not None:
        _check_size(card, url, body, counts)
    return Checked(cfg, sum(counts) if counts is not None else None)


def _check_size(card: ModelCard, url: str, body: dict[str, Any], counts: list[int]) -> None:
    window = card.context_window
    if url == CHAT:
        prompt, wanted = sum(counts), max_tokens_of(body) or 0
        if prompt + wanted > window:
            raise ContextWindowExceeded(
                f"the prompt has {prompt} tokens and max_tokens asks for {wanted}:"
                f" {prompt + wanted} tokens, above the {window}-token context window of"
                f" {card.name}; shorten the messages or lower max_tokens",
                param="messages",
            )
    elif url == EMBEDDINGS:
        for i, size in enumerate(counts):
            if size > window:
                raise ContextWindowExceeded(
                    f"input[{i}] has {size} tokens, above the {window}-token context window of"
                    f" {card.name}; split the text into shorter pieces",
                    param="input",
                )


def describe_request_error(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A message (and the field) for FastAPI's request validation errors."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not valid JSON")
        where = first.get("loc", ("body", "?"))[-1]
        return f"malformed JSON in the request body at position {where}: {reason}", None
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}")
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return "; ".join(parts), field
