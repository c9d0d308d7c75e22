"""The OpenAI surface at the door, in process: every parameter a model cannot honour is refused
with a 400 naming it (here the echo model, which declares no features), unknown routes and
methods answer in the OpenAI error shape, and the OpenAPI schema documents the real answers."""

from __future__ import annotations

from typing import Any

import pytest

from genspool.testing.inprocess import InProcess
from tests.helpers.api import CHAT, EMBEDDINGS, assert_error, chat_body, operations

#: A parameter at a value that asks for something echo does not do, and the param named.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3, "logprobs": True}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"frobnicate": 1}, "frobnicate"),
]
#: Values that ask for nothing more than leaving the parameter out (SDKs send them).
NEUTRAL: list[dict[str, Any]] = [
    {"n": 1},
    {"logprobs": False},
    {"frequency_penalty": 0, "presence_penalty": 0},
    {"logit_bias": {}},
    {"response_format": {"type": "text"}},
    {"modalities": ["text"]},
    {"tools": []},
    {"user": "u1", "metadata": {"k": "v"}, "store": False, "parallel_tool_calls": True},
]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[p for _, p in REFUSED])
async def test_an_unsupported_parameter_is_refused_naming_it(
    gs: InProcess, extra: dict[str, Any], param: str
) -> None:
    body = {**chat_body("echo"), **extra}
    for response in (
        await gs.client.post(CHAT, json=body),
        await gs.client.post("/v1/jobs", json={"url": CHAT, "body": body}),
    ):
        message = assert_error(response, 400, "invalid_request_error")
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert message.startswith(f"{param}:"), message


@pytest.mark.parametrize("extra", NEUTRAL, ids=lambda e: ",".join(e))
async def test_a_neutral_value_is_accepted(gs: InProcess, extra: dict[str, Any]) -> None:
    response = await gs.client.post(CHAT, json={**chat_body("echo", "ok"), **extra})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "ok"


async def test_embeddings_refuse_what_they_do_not_know(gs: InProcess) -> None:
    body = {"model": "echo", "input": "x", "truncate": "END"}
    assert_error(await gs.client.post(EMBEDDINGS, json=body), 400, "invalid_request_error")
    assert (await gs.client.post(EMBEDDINGS, json={**body, "truncate": None})).status_code == 200


async def test_unknown_route_and_wrong_method_answer_in_the_openai_shape(gs: InProcess) -> None:
    message = assert_error(await gs.client.get("/v1/nothing-here"), 404, "not_found")
    assert "/v1/nothing-here" in message
    response = await gs.client.get(CHAT)
    message = assert_error(response, 405, "method_not_allowed")
    assert "POST" in message and response.headers["allow"] == "POST"
    assert_error(await gs.client.put("/v1/jobs"), 405, "method_not_allowed")
    assert_error(await gs.client.get("/docs-assets/no-such-file.js"), 404, "not_found")


async def test_the_schema_has_response_models_and_the_real_error_codes(gs: InProcess) -> None:
    schema = (await gs.client.get("/openapi.json")).json()
    models = schema["components"]["schemas"]
    assert {"ChatCompletion", "EmbeddingList", "JobModel", "JobList", "ModelList"} <= set(models)
    assert set(models["ErrorResponse"]["properties"]) == {"error"}
    assert "HTTPValidationError" not in models

    def ok_schema(method: str, path: str) -> str:
        op = schema["paths"][path][method]
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        ref: str = ok["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert ok_schema("post", CHAT) == "ChatCompletion"
    assert ok_schema("post", EMBEDDINGS) == "EmbeddingList"
    assert ok_schema("post", "/v1/jobs") == "JobModel"
    assert ok_schema("get", "/v1/jobs/{job_id}") == "JobModel"
    assert ok_schema("get", "/v1/jobs") == "JobList"
    assert ok_schema("get", "/v1/models") == "ModelList"
    for method, template, _, op in operations(schema):
        codes = set(op["responses"])
        assert "422" not in codes, (method, template)
        for code in codes - {"200", "201", "202"}:
            ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (method, template, code)
    submit = set(schema["paths"][CHAT]["post"]["responses"])
    assert {"400", "401", "403", "404", "413", "429", "503"} <= submit
    assert {"404", "409"} <= set(schema["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"])


async def test_a_real_answer_matches_its_documented_model(gs: InProcess) -> None:
    from genspool.api.schemas import ChatCompletion, EmbeddingList, JobModel, ModelList

    ChatCompletion.model_validate((await gs.client.post(CHAT, json=chat_body("echo"))).json())
    body = {"model": "echo", "input": ["a", "b"]}
    EmbeddingList.model_validate((await gs.client.post(EMBEDDINGS, json=body)).json())
    ModelList.model_validate((await gs.client.get("/v1/models")).json())
    job = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("echo")})
    JobModel.model_validate(job.json())


async def test_docs_pages_point_at_packaged_assets(gs: InProcess) -> None:
    page = (await gs.client.get("/docs")).text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn." not in page
    redoc = (await gs.client.get("/redoc")).text
    assert "/docs-assets/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        response = await gs.client.get(f"/docs-assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000, asset
