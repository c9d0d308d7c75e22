"""Property-based tests of the whole HTTP API from its own ``/openapi.json`` (schemathesis,
calling the ASGI app directly): whatever a client sends to whatever route, the answer is never
a 5xx. With an admin key, so every route is reached past authentication (key creation and
revocation included), and with no key at all. An echo model answers (it computes nothing).
The OpenAI-compatible routes are in the schema with their bodies; ``stream: true`` gets a
run of its own, with any JSON in any chat field (what no store can keep included)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from genspool.api.validation import ChatBody
from genspool.core.keys import Scope
from genspool.testing.inprocess import build
from tests.helpers.api import CHAT, FAST_RETRY, bearer

MODELS = [
    {"name": "echo", "provider": "echo"},
    {"name": "tiny", "provider": "echo", "context_window": 16},
]
# Built at import: schemathesis reads the schema then, and runs the app's lifespan itself.
APP = build(MODELS, worker=True, retry=FAST_RETRY, wait_timeout_s=10.0)
ADMIN = asyncio.run(APP.services.keys.create("ops", [Scope.ADMIN]))[1]
schema = schemathesis.openapi.from_asgi("/openapi.json", APP.app)


FUZZ = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


@schema.parametrize()
@settings(max_examples=30, **FUZZ)
def test_no_input_gives_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=bearer(ADMIN), checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=30, **FUZZ)  # as the admin run: a body is parsed before the key
def test_no_input_without_a_key_gives_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


# -- the OpenAI-compatible routes with stream: true ------------------------------------------

STREAM_APP = build(MODELS, worker=True, retry=FAST_RETRY, wait_timeout_s=10.0)
#: Any JSON value, with what a store cannot keep among them (big integers, lone surrogates).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
    | st.sampled_from(["\ud800", "a\udfffb", "\U0001f600"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
#: Chat fields (``model`` kept valid, so that most bodies get as far as the stream).
CHAT_FIELDS = [*sorted(set(ChatBody.model_fields) - {"model"}), "frobnicate"]


@pytest.fixture(scope="module")
def stream_client() -> Iterator[TestClient]:
    with TestClient(STREAM_APP.app, base_url="http://testserver") as client:
        yield client


@given(
    fields=st.just({}) | st.dictionaries(st.sampled_from(CHAT_FIELDS), JSON_VALUES, max_size=2),
    options=st.one_of(
        st.none(), JSON_VALUES, st.fixed_dictionaries({"include_usage": JSON_VALUES})
    ),
)
@settings(max_examples=60, **FUZZ)
def test_a_streamed_call_never_gives_a_server_error(
    stream_client: TestClient, fields: dict[str, Any], options: Any
) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **fields}
    body.update(stream=True, stream_options=options)
    raw = json.dumps(body).encode()  # ASCII: a lone surrogate goes as its escape
    response = stream_client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.text.endswith("data: [DONE]\n\n"), response.text
    else:
        assert set(response.json()) == {"error"}, response.text
