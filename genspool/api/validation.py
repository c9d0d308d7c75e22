"""Validation at the door: a request that cannot succeed never reaches the queue.

Checks the endpoint, the model, the body's fields (by endpoint) and the prompt size against the
model's context window, with the model's own tokenizer. Each failure is an
:class:`~genspool.exceptions.InvalidRequest` whose message names the field and what to fix.

Parameters: each model honours the basic ones (:data:`BASICS`) and those its card declares
(:attr:`ModelCard.features`); any other, at a value that asks for something, is refused with a
400 naming it, so nothing is silently ignored. A remote model's card declares None: its
upstream decides.

Everything is read from the model's card (:class:`~genspool.providers.plugins.ModelCard`): no
provider is built and no weights are loaded here. The prompt is tokenized once, here; the count
goes on with the job so the worker need not tokenize it again to account for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.api.bodies import ENDPOINT_BODIES
from genspool.api.jsonbody import field_path
from genspool.config import INTERNAL_MODELS, ModelConfig
from genspool.exceptions import ContextWindowExceeded, InvalidRequest
from genspool.providers.base import CHAT, EMBEDDINGS
from genspool.providers.plugins import ModelCard
from genspool.runtime.catalog import ModelCatalog

__all__ = [
    "BASICS",
    "ChatBody",
    "Checked",
    "EmbeddingsBody",
    "check_stream",
    "describe",
    "describe_request_error",
    "max_tokens_of",
    "streamed",
    "validate_request",
]

#: Parameters every model honours, or that change nothing in an answer (``user``, ``store``).
BASICS: dict[str, frozenset[str]] = {
    CHAT: frozenset(
        {
            "model",
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "n",
            "stream",
            "stream_options",
            "stop",
            "seed",
            "user",
            "metadata",
            "store",
            "service_tier",
            "safety_identifier",
            "prompt_cache_key",
            "parallel_tool_calls",  # one call at most is made, which any value allows
        }
    ),
    EMBEDDINGS: frozenset({"model", "input", "encoding_format", "dimensions", "user"}),
}
#: The other parameters of OpenAI's chat completions (for the message that refuses one).
_OPENAI_CHAT = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "modalities",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "tool_choice",
        "tools",
        "top_logprobs",
        "verbosity",
        "web_search_options",
    }
)
#: Values that ask for nothing more than leaving the parameter out (as SDKs often send them).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "functions": ([],),
    "function_call": ("none",),
    "modalities": (["text"],),
    "response_format": ({"type": "text"},),
}


#: Strict: a value of the wrong type is refused, not converted ("yes" is no boolean, "0.5" no
#: number), as the body is stored and sent on exactly as it came.
_STRICT = ConfigDict(extra="allow", strict=True)
_Object = dict[str, Any]


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Object] | None = None
    name: str | None = None
    tool_calls: list[_Object] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class _Streaming(BaseModel):
    model_config = ConfigDict(strict=True)
    stream: bool | None = None
    stream_options: StreamOptions | None = None


class ChatBody(_Streaming):
    """The OpenAI chat parameters, each of its type; whether a model honours one is checked
    apart (:func:`validate_request`)."""

    model_config = _STRICT
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, description="more than 1: remote models only")
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    parallel_tool_calls: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    response_format: _Object | None = None
    tools: list[_Object] | None = None
    tool_choice: str | _Object | None = None
    functions: list[_Object] | None = None
    function_call: str | _Object | None = None
    audio: _Object | None = None
    prediction: _Object | None = None
    web_search_options: _Object | None = None


class EmbeddingsBody(BaseModel):
    model_config = _STRICT
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, gt=0)
    user: str | None = None


class _AnyBody(BaseModel):
    model_config = _STRICT
    model: str


SCHEMAS: dict[str, type[BaseModel]] = {
    CHAT: ChatBody,
    EMBEDDINGS: EmbeddingsBody,
    **ENDPOINT_BODIES,
}


def _invalid(exc: ValidationError, body: Any) -> InvalidRequest:
    """The 400 for a body that failed its schema, naming the first field at fault."""
    first = _located(exc.errors()[0], body) if exc.errors() else ()
    return InvalidRequest(describe(exc, "body", body), param=field_path("", first))


def _located(err: Any, data: Any) -> tuple[str | int, ...]:
    """The path of an error in ``data``: pydantic's ``loc`` without the union members' tags
    (``content.str``) that name no field of the request."""
    path: list[str | int] = []
    for step in err["loc"]:
        present = (isinstance(data, dict) and step in data) or (
            isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        )
        if not present:
            if err["type"] == "missing" and isinstance(data, dict):
                path.append(step)
            break
        data = data[step]
        path.append(step)
    return tuple(path)


def streamed(body: dict[str, Any]) -> bool:
    """Whether a chat body asks for a stream, its ``stream`` and ``stream_options`` checked."""
    try:
        asked = _Streaming.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc, body) from exc
    if asked.stream_options is not None and not asked.stream:
        raise InvalidRequest(
            "stream_options: only allowed with stream: true", param="stream_options"
        )
    return bool(asked.stream)


def describe(exc: ValidationError, prefix: str = "", data: Any = None) -> str:
    """``field.path: what is wrong`` for the first fields of a pydantic validation of
    ``data`` (a union's refusals joined with "or")."""
    found: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = _located(err, data) if data is not None else err["loc"]
        found.setdefault(field_path(prefix, loc), []).append(err["msg"])
    return "; ".join(f"{where}: {' or '.join(why)}" for where, why in list(found.items())[:3])


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
    if cfg.name in INTERNAL_MODELS:
        raise InvalidRequest(
            f"body.model: {model} is genspool's own (fan-outs: POST /v1/fanouts; answers:"
            " /v1/responses with a file_search tool); name a served model",
            param="model",
        )
    card = models.card(model)
    if url not in card.endpoints:
        served = ", ".join(sorted(card.endpoints))
        raise InvalidRequest(f"url: model {model} serves {served}, not {url}", param="url")
    _check_features(card, url, body)
    try:
        SCHEMAS.get(url, _AnyBody).model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc, body) from exc
    if url == CHAT and streamed(body):
        raise InvalidRequest(
            "body.stream: a job is stored whole, not streamed; leave stream out (or false) and"
            " follow the job's events (GET /v1/jobs/{id}/events, or the WebSocket), or call"
            " POST /v1/chat/completions with stream: true",
            param="body.stream",
        )
    if url != CHAT and body.get("stream") not in (None, False):
        raise InvalidRequest(
            f"body.stream: a job is stored whole; {url} is answered whole, leave stream out",
            param="body.stream",
        )
    if card.check is not None:
        card.check(url, body)
    if card.dimensions is not None and body.get("dimensions") not in (None, card.dimensions):
        raise InvalidRequest(f"body.dimensions: {model} returns {card.dimensions} dimensions only")
    counts = card.count(url, body) if card.count is not None else None
    if counts is not None:
        _check_size(card, url, body, counts)
    return Checked(cfg, sum(counts) if counts is not None else None)


def _check_features(card: ModelCard, url: str, body: dict[str, Any]) -> None:
    """Refuse, naming it, the first parameter that asks for what the model does not do."""
    basics = BASICS.get(url)
    if card.features is None or basics is None:
        return
    for param, feature in _asked(body, basics):
        if feature not in card.features:
            raise InvalidRequest(_refusal(card, url, param, feature), param=param)


def _asked(body: dict[str, Any], basics: frozenset[str]) -> Iterator[tuple[str, str]]:
    """``(parameter, feature)`` for everything the body asks beyond the basics."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        yield "n", "n"
    for key, value in body.items():
        if key in basics or value is None or value in _NEUTRAL.get(key, ()):
            continue
        if key == "response_format":
            kind = value.get("type") if isinstance(value, dict) else None
            yield key, f"response_format:{kind}"
        elif key == "tool_choice":
            kind = value if isinstance(value, str) else "function"
            yield key, f"tool_choice:{kind}"
        else:
            yield key, key
    if body.get("tools") and body.get("tool_choice") is None:
        yield "tool_choice", "tool_choice:auto"  # OpenAI's default when tools are given


def _refusal(card: ModelCard, url: str, param: str, feature: str) -> str:
    name = card.name
    if param == "n":
        return f"n: {name} gives one answer per request (n=1); send n requests instead"
    if param == "tool_choice" and feature == "tool_choice:auto":
        return (
            f"tool_choice: {name} does not choose on its own whether to call a tool ('auto',"
            " the default with tools); set tool_choice to 'required', 'none' or"
            " {'type': 'function', 'function': {'name': ...}}"
        )
    if ":" in feature:
        kinds = sorted(f.split(":", 1)[1] for f in card.features or () if f.startswith(param))
        value = feature.split(":", 1)[1]
        some = ", ".join(kinds) or "none"
        return f"{param}: {value!r} is not supported by {name} (supported: {some})"
    if url == CHAT and param not in _OPENAI_CHAT:
        return f"{param}: not a parameter of {url} that {name} knows; remove it"
    return f"{param}: not supported by {name}; remove it (or use a model that supports it)"


def check_stream(card: ModelCard, body: dict[str, Any]) -> None:
    """Refuse what a streamed answer of this model cannot carry (its chunks hold text only)."""
    if card.features is None or not body.get("stream"):
        return
    for param in ("logprobs", "tools"):
        if body.get(param) not in (None, *_NEUTRAL[param]):
            raise InvalidRequest(
                f"{param}: {card.name} returns it on answers without stream: true only",
                param=param,
            )


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
