"""OpenAI parameters on the bundled llama.cpp model, through a real ``genspool serve`` and the
official ``openai`` SDK: ``response_format`` with a JSON schema (the answer parses and
validates), a forced tool call in the OpenAI shape, ``logprobs``, and the 400 that names each
parameter the model cannot honour."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs  # installed with schemathesis
import openai
import pytest

from tests.helpers.processes import CHAT, Server, Spawner

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the largest city of France, and its population?"}]


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(None, db=module_spawner.root / "params.db", startup_s=180)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


def test_json_schema_output_parses_and_validates(client: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=fmt, max_tokens=80, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema_rs.validate(CITY, json.loads(choice.message.content))


def test_json_object_through_a_job(server: Server) -> None:
    body = {
        "model": MODEL,
        "messages": ASK,
        "response_format": {"type": "json_object"},
        "max_tokens": 80,
        "temperature": 0.7,
        "seed": 3,
    }
    done = server.wait(server.submit(body)["id"], timeout=120)
    assert done["status"] == "succeeded", done
    content = done["result"]["body"]["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)


def test_a_named_tool_call_comes_back_in_the_openai_shape(client: Any) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema_rs.validate(WEATHER_TOOL["function"]["parameters"], arguments)


def test_logprobs_have_the_openai_shape(client: Any) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = answer.choices[0]
    tokens = choice.logprobs.content
    assert len(tokens) == answer.usage.completion_tokens
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:
        assert t.logprob <= 0 and bytes(t.bytes).decode(errors="replace") == t.token
        assert len(t.top_logprobs) == 3
        assert [a.logprob for a in t.top_logprobs] == sorted(
            (a.logprob for a in t.top_logprobs), reverse=True
        )
        # Greedy: the token taken is the likeliest one.
        assert t.top_logprobs[0].token == t.token
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content  # recording changes nothing


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"tools": [WEATHER_TOOL]}, "tool_choice"),  # 'auto', the default with tools
    ({"tools": [WEATHER_TOOL], "tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "required", "stream": True}, "tools"),
    ({"logprobs": True, "stream": True}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "response_format"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_what_the_model_cannot_honour_is_a_400_naming_it(
    client: Any, server: Server, extra: dict[str, Any], param: str
) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **extra)
    assert caught.value.param == param, caught.value
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    if not extra.get("stream"):  # through the queue's own door too
        body = {"model": MODEL, "messages": ASK, **extra}
        response = server.client.post("/v1/jobs", json={"url": CHAT, "body": body})
        assert response.status_code == 400 and response.json()["error"]["param"] == param
