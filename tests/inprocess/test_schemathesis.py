"""Property-based tests of the whole HTTP API from its own ``/openapi.json`` (schemathesis,
calling the ASGI app directly): whatever a client sends to whatever route, the answer is never
a 5xx. With an admin key, so every route is reached past authentication (key creation and
revocation included), and with no key at all. An echo model answers (it computes nothing)."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from genspool.core.keys import Scope
from genspool.testing.inprocess import build
from tests.helpers.api import FAST_RETRY, bearer

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
