"""Malformed bodies and a wait that times out, against a real ``genspool serve`` over HTTP
(issue 14): what the in-process tests check, here through uvicorn's own reading of the body
and a real socket, where a handler that fails mid-stream drops the connection."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.helpers.api import assert_error, slow_model
from tests.helpers.processes import CHAT, EMBEDDINGS, Server, Spawner

MODELS: list[dict[str, Any]] = [{"name": "echo", "provider": "echo"}, slow_model(3000)]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    env = {"GENSPOOL_WAIT_TIMEOUT_S": "0.5", "GENSPOOL_MAX_JSON_DEPTH": "16"}
    return module_spawner.server(MODELS, env=env)


def jobs(server: Server) -> list[str]:
    listed = server.client.get("/v1/jobs", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    return [j["id"] for j in listed.json()["data"]]


@pytest.mark.parametrize(
    ("route", "raw", "param"),
    [
        ("/v1/jobs", b'{"url": "' + CHAT.encode() + b'", "body": {"model": "\xff"}}', None),
        (CHAT, b'{"model": "echo", "messages": [{"role": "user", "content": "\xe2\x82"}]}', None),
        (EMBEDDINGS, b'{"model": "echo", "input": "\xc0\xaf"}', None),
        (
            CHAT,  # the connection was dropped: the stream failed once it had begun
            b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}],'
            b' "stream": true, "stream_options": "x"}',
            "stream_options",
        ),
        (
            "/v1/jobs",
            b'{"url": "' + CHAT.encode() + b'", "body": {}, "expires_at": NaN}',
            "expires_at",
        ),
        (CHAT, b'{"model": "echo", "messages": [' * 100 + b"]" * 100 + b"}" * 100, None),
    ],
    ids=["jobs-utf8", "chat-utf8", "embeddings-utf8", "stream_options", "nan", "deep"],
)
def test_a_malformed_body_is_a_400_in_the_openai_shape_and_stores_nothing(
    server: Server, route: str, raw: bytes, param: str | None
) -> None:
    before = jobs(server)
    response = server.client.post(route, content=raw, headers=JSON)
    assert_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["param"] == param
    assert jobs(server) == before


def test_the_openai_sdk_gets_one_answer_and_one_job_for_a_wait_that_times_out(
    server: Server,
) -> None:
    before = set(jobs(server))
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="slow", messages=[{"role": "user", "content": "hi"}])
    response: httpx.Response = caught.value.response
    assert response.status_code == 424 and response.headers["x-should-retry"] == "false"
    (job_id,) = set(jobs(server)) - before  # one job: the SDK did not call again
    assert job_id in assert_error(response, 424, "wait_timeout")
    assert response.headers["location"] == f"/v1/jobs/{job_id}"


def test_the_depth_limit_is_read_from_the_environment(server: Server) -> None:
    def job(levels: int) -> bytes:  # the job is level 1, metadata 2, then the arrays
        nested = b"[" * levels + b"]" * levels
        return b'{"url": "%s", "body": {}, "metadata": {"a": %s}}' % (CHAT.encode(), nested)

    deep = server.client.post("/v1/jobs", content=job(15), headers=JSON)
    assert "deeper than 16 levels" in assert_error(deep, 400)
    shallow = server.client.post("/v1/jobs", content=job(14), headers=JSON)
    assert "deeper" not in assert_error(shallow, 400)  # past the depth check: no model
