"""What the API answers, as pydantic models for the OpenAPI schema.

The routes build their bodies as dicts (the providers' OpenAI shapes, ``Job.public()``); these
models document them. :func:`document_responses` puts them into ``/openapi.json`` by route, with
the error codes each route really answers (400, never FastAPI's default 422), all in the one
OpenAI error shape. Nothing here validates an answer at run time.

The routes that submit read their bodies themselves (one orjson parse,
:mod:`genspool.api.jsonbody`), so FastAPI does not see a body parameter: :func:`request_body`
declares the model of each, for the schema (and the fuzzing that reads it).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletion",
    "EmbeddingList",
    "ErrorResponse",
    "JobList",
    "JobModel",
    "ModelList",
    "document_responses",
    "request_body",
]

#: The request models that :func:`request_body` declared, added to the schema's components.
_REQUESTS: list[type[BaseModel]] = []


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body is a ``model``."""
    _REQUESTS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and what to change.")
    type: Literal["invalid_request_error", "server_error"]
    param: str | None = Field(None, description="The request field at fault, when one is.")
    code: str | None = Field(None, description="e.g. invalid_request_error, model_not_found")


class ErrorResponse(BaseModel):
    """Every error of the API, OpenAI's shape."""

    error: ErrorDetail


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ToolFunction(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ToolFunction


class ChatMessage(_Open):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(_Open):
    index: int
    message: ChatMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = Field(description="stop, length, tool_calls, ...")


class ChatCompletion(_Open):
    """POST /v1/chat/completions without ``stream`` (with it: ``text/event-stream`` chunks)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 little-endian float32")


class EmbeddingList(_Open):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class ModelInfo(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    provider: str
    context_window: int
    endpoints: list[str]
    breaker: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelInfo]


class JobModel(_Open):
    """A job as ``Job.public()`` shows it."""

    id: str
    object: Literal["job"]
    tenant: str
    status: Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled", "expired"]
    url: str
    model: str
    priority: int
    attempts: int
    max_attempts: int
    metadata: dict[str, Any]
    idempotency_key: str | None
    expires_at: float | None
    created_at: float
    timestamps: dict[str, float]
    result: dict[str, Any] | None = Field(None, description="{status_code, body} once done.")
    error: dict[str, Any] | None
    request: dict[str, Any] | None = Field(
        None,
        description="{url, body} as submitted: in one job; in a list with ?include=request.",
    )
    history: list[dict[str, Any]] | None = Field(
        None,
        description="Every attempt, oldest first (the last 50), the running one last: "
        "{attempt, worker, started_at, ended_at, outcome, error}; in one job, in a list with "
        "?include=history.",
    )


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobModel]
    has_more: bool
    next_cursor: str | None


class ListOf(_Open):
    object: Literal["list"]
    data: list[dict[str, Any]]


#: The success body of each route, by (method, path).
_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/v1/chat/completions"): ChatCompletion,
    ("POST", "/v1/embeddings"): EmbeddingList,
    ("GET", "/v1/models"): ModelList,
    ("POST", "/v1/jobs"): JobModel,
    ("GET", "/v1/jobs"): JobList,
    ("GET", "/v1/dlq"): JobList,
    ("GET", "/v1/jobs/{job_id}"): JobModel,
    ("POST", "/v1/jobs/{job_id}/cancel"): JobModel,
    ("DELETE", "/v1/jobs/{job_id}"): JobModel,
    ("POST", "/v1/dlq/{job_id}/replay"): JobModel,
    ("POST", "/v1/jobs/{job_id}/replay"): JobModel,
    ("GET", "/v1/keys"): ListOf,
    ("GET", "/v1/breakers"): ListOf,
}
#: Errors by what a route does: the status, and when it happens.
_ERRORS = {
    400: "A parameter is missing, malformed or not supported (named in error.param).",
    401: "No API key, or an unknown or revoked one (once any key exists).",
    403: "The API key lacks the scope this route needs.",
    404: "No such job (or one of another tenant), model or key.",
    409: "The job is not in a state that allows this.",
    413: "The request body is above the size limit.",
    424: "The job did not end within the wait (GENSPOOL_WAIT_TIMEOUT_S) and goes on: its id is"
    " in the message and the Location header. Not 408 or 5xx, which the OpenAI SDKs retry"
    " (each retry a new job); x-should-retry: false says so to them.",
    429: "Over a rate limit; Retry-After says when to try again.",
    503: "The store, or the model's breaker, cannot take it now.",
}


def document_responses(app: FastAPI) -> None:
    """Give every operation of ``app``'s OpenAPI schema its body model and real error codes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI; documented once
        if not schema.get("x-genspool-responses"):
            _document(schema)
            schema["x-genspool-responses"] = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [*_BODIES.values(), ErrorResponse, *_REQUESTS]
    for model in models:
        _add_model(components, model)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                # The scope comes from auth.document_scopes, which annotated the schema first.
                _document_op(op, method.upper(), path, op.get("x-genspool-scope"))


def _add_model(components: dict[str, Any], model: type[BaseModel]) -> None:
    found = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(found.pop("$defs", {}))
    components[model.__name__] = found


def _document_op(op: dict[str, Any], method: str, path: str, scope: str | None) -> None:
    responses = op["responses"]
    responses.pop("422", None)
    model = _BODIES.get((method, path))
    if model is not None:
        ok = next((code for code in responses if code.startswith("2")), "200")
        content = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        }
        responses[ok] = {
            "description": responses.get(ok, {}).get("description", "OK"),
            "content": content,
        }
    for status in _statuses(op, method, path, scope):
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        responses[str(status)] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": ref}},
        }


def _statuses(op: dict[str, Any], method: str, path: str, scope: str | None) -> list[int]:
    submits = method == "POST" and path in ("/v1/chat/completions", "/v1/embeddings", "/v1/jobs")
    queried = any(p.get("in") == "query" for p in op.get("parameters", ()))
    statuses = [400] if queried or submits or "requestBody" in op else []
    if scope not in (None, "public"):
        statuses += [401, 403]
    if "{" in path or submits:
        statuses.append(404)  # an unknown job, key or model
    if path.endswith(("/cancel", "/replay")) or method == "DELETE":
        statuses.append(409)
    if method == "POST":
        statuses.append(413)
    if submits:
        statuses += [429, 503]
    if path in ("/v1/chat/completions", "/v1/embeddings"):
        statuses.append(424)
    return statuses
