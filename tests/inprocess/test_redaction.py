"""No API key in any log record, at any level, whatever the case or percent-encoding of the
query parameter or header that carries it: ``?tok%65n=`` is the parameter ``token`` to every
query parser (the WebSocket accepts a key under it), so it is blanked like ``?token=``.

In process, with the redaction ``genspool serve`` installs (every record blanked as it is made)
and uvicorn's own ASGI message logger (what ``--log-level trace`` adds, logging each scope with
its query string) around the app; over a real server in
``tests/integration/test_door_limits.py``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
from uvicorn.middleware.message_logger import MessageLoggerMiddleware

from genspool.core.keys import Scope, redact, redact_every_record
from genspool.testing.inprocess import BASE_URL, InProcess

OPAQUE = "opaque-Token-5eb1c2d7"  # not shaped like a key: only its name says it is one

#: Query names a client may put a key under; all of them are the same few names, decoded.
NAMES = [
    "token",
    "TOKEN",
    "tok%65n",
    "%74%6F%6B%65%6E",
    "tok%2565n",
    "api_key",
    "api%2Dkey",
    "access_token",
    "X-Api-Key",
    "key",
]


def secrets_in(records: list[logging.LogRecord], *secrets: str) -> list[str]:
    found = []
    for record in records:
        text = record.getMessage() + (record.exc_text or "") + (record.stack_info or "")
        plain = urllib.parse.unquote(urllib.parse.unquote(text))
        found += [text for s in secrets if s in text or s in plain]
    return found


@pytest.fixture
def redacting() -> Iterator[None]:
    undo = redact_every_record()
    try:
        yield
    finally:
        undo()


@pytest.mark.usefixtures("redacting")
async def test_keys_under_encoded_names_reach_no_record(
    gs: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)  # everything, uvicorn's TRACE (5) included
    _, key = await gs.services.keys.create("acme", [Scope.ADMIN])
    secret = key.rsplit("_", 1)[-1]
    encoded = key.replace("_", "%5F")
    transport = httpx.ASGITransport(app=MessageLoggerMiddleware(gs.app))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for name in NAMES:
            for value in (key, encoded, OPAQUE):
                await client.get(f"/v1/jobs?{name}={value}&limit=1")
        await client.get(f"/v1/jobs?token%3D{OPAQUE}")  # an encoded '=': a name, no value
        for header in ({"Authorization": f"bearer {OPAQUE}"}, {"X-API-Key": OPAQUE}):
            await client.get("/v1/jobs", headers=header)
            logging.getLogger("some.library").debug("sent headers %s", list(header.items()))
    assert any("tok%65n=[redacted]" in r.getMessage() for r in caplog.records)
    assert secrets_in(caplog.records, secret, OPAQUE) == []


def test_an_exception_text_is_blanked_too(
    redacting: None, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        raise ValueError(f"bad URL /v1/ws?Tok%65N={OPAQUE}")
    except ValueError:
        logging.getLogger("some.library").exception("failed")
    assert secrets_in(caplog.records, OPAQUE) == []


@pytest.mark.parametrize(
    "line",
    [
        f"GET /v1/ws?tok%65n={OPAQUE}&x=1 HTTP/1.1",
        f"scope={{'query_string': b'%74oken={OPAQUE}'}}",
        f"?tok%65n={OPAQUE[:5]}%26{OPAQUE[5:]}",  # an encoded '&' inside the value
        f"?x=gsk%5F0123456789ab%5F{OPAQUE}",  # a key's shape, encoded, under any name
        f"(b'authorization', b'Bearer {OPAQUE}')",
        f"{{'x-api-key': '{OPAQUE}'}}",
        f"Authorization: Basic {OPAQUE}",
        f"Proxy-Authorization: {OPAQUE}",
    ],
)
def test_redact_decodes_names_and_values(line: str) -> None:
    clean = redact(line)
    assert OPAQUE not in clean and OPAQUE[5:] not in urllib.parse.unquote(clean), clean
    assert "[redacted]" in clean


def test_redact_leaves_other_parameters_alone() -> None:
    assert (
        redact("GET /v1/jobs?model=echo&limit=10 100%") == "GET /v1/jobs?model=echo&limit=10 100%"
    )
    assert redact(f"?tok%65n={OPAQUE}&limit=2") == "?tok%65n=[redacted]&limit=2"
