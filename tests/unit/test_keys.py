"""Unit tests of API keys: the token format, hashing, scopes, redaction, and the key store on a
in-memory backend (with an injected clock for the cache, so nothing sleeps)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from genspool.api.auth import OPEN, Caller
from genspool.backends.memory import MemoryBackend as Backend
from genspool.core.keys import (
    ApiKey,
    KeyStore,
    Scope,
    SecretsFilter,
    digest,
    parse_scopes,
    parse_token,
    redact,
)
from genspool.exceptions import Forbidden, InvalidRequest, NotFound, Unauthorized


class Clock:
    """A hand-moved monotonic clock (a fake, for exact cache timings)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend()
    await b.connect()
    try:
        yield b
    finally:
        await b.close()


def test_parse_token_accepts_only_the_key_shape() -> None:
    secret = "A" * 20 + "_-x"  # base64url secrets may hold '_' and '-'
    assert parse_token(f"gsk_0123456789ab_{secret}") == ("0123456789ab", secret)
    for bad in (
        "",
        "Bearer x",
        "sk-0123456789ab_" + "a" * 30,  # not our prefix
        "gsk_0123456789AB_" + "a" * 30,  # id is lower-case hex
        "gsk_0123456789a_" + "a" * 30,  # id too short
        "gsk_0123456789ab_short",  # secret too short
        "gsk_0123456789ab",
    ):
        assert parse_token(bad) is None, bad


def test_digest_is_sha256_hex_and_matching_is_exact() -> None:
    assert digest("s3cret") == hashlib.sha256(b"s3cret").hexdigest()
    key = ApiKey("0123456789ab", "t", frozenset({Scope.READ}), digest("right"), 0.0)
    assert key.matches("right")
    assert not key.matches("wrong")
    assert not key.matches("right ")


def test_scopes_parse_and_admin_includes_the_others() -> None:
    assert parse_scopes("submit, read") == {Scope.SUBMIT, Scope.READ}
    assert parse_scopes(["admin"]) == {Scope.ADMIN}
    for bad in ("", "read,writ", ",", "READ"):
        with pytest.raises(InvalidRequest, match="scopes"):
            parse_scopes(bad)
    read = ApiKey("0123456789ab", "t", frozenset({Scope.READ}), "d", 0.0)
    admin = ApiKey("0123456789ab", "t", frozenset({Scope.ADMIN}), "d", 0.0)
    assert read.allows(Scope.READ) and not read.allows(Scope.SUBMIT)
    assert not read.allows(Scope.ADMIN)
    assert all(admin.allows(s) for s in Scope)


def test_record_round_trips_and_public_view_has_no_digest() -> None:
    key = ApiKey(
        "0123456789ab", "acme", frozenset({Scope.READ, Scope.SUBMIT}), "d" * 64, 5.0, "ci", 30
    )
    assert ApiKey.loads(key.dumps()) == key
    public = key.public()
    assert "digest" not in public and "d" * 64 not in str(public)
    assert public["scopes"] == ["read", "submit"] and public["revoked"] is False


def test_caller_tenant_rules() -> None:
    reader = Caller("acme", frozenset({Scope.READ}))
    assert reader.sees == "acme"
    assert reader.listing(None) == "acme" and reader.listing("acme") == "acme"
    with pytest.raises(Forbidden, match="admin"):
        reader.listing("beta")
    admin = Caller("ops", frozenset({Scope.ADMIN}))
    assert admin.sees is None
    assert admin.listing(None) is None and admin.listing("beta") == "beta"
    assert OPEN.sees is None and OPEN.tenant == "default"


def test_redact_blanks_secrets_but_keeps_what_helps() -> None:
    token = "gsk_0123456789ab_" + "Zz9_-" * 8
    line = f'GET /v1/ws?token={token}&x=1 "Authorization: Bearer {token}" key {token}'
    clean = redact(line)
    assert "Zz9_-" not in clean
    assert "gsk_0123456789ab_[redacted]" in clean  # the id still says which key it was
    assert "Bearer [redacted]" in clean and "x=1" in clean
    assert redact("no secrets here") == "no secrets here"


def test_secrets_filter_rewrites_records_with_args() -> None:
    token = "gsk_0123456789ab_" + "q" * 43
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "path %s", (f"/ws?token={token}",), None
    )
    assert SecretsFilter().filter(record)
    assert "q" * 43 not in record.getMessage()


async def test_store_creates_a_key_that_authenticates_and_stores_no_secret(
    backend: Backend,
) -> None:
    store = KeyStore(backend, backend)
    assert not await store.enabled()
    key, token = await store.create("acme", [Scope.SUBMIT], name="ci", rpm=10)
    key_id, secret = parse_token(token) or ("", "")
    assert key_id == key.id and len(secret) >= 40
    raw = await backend.kv_get("keys", key.id)
    assert raw is not None and secret.encode() not in raw and token.encode() not in raw
    assert (await store.authenticate(token)) == key
    assert await store.enabled()


async def test_store_refuses_missing_unknown_and_wrong_keys_without_echoing_them(
    backend: Backend,
) -> None:
    store = KeyStore(backend, backend)
    _, token = await store.create("acme", [Scope.READ])
    key_id = token.split("_")[1]
    candidates = [
        None,
        "",
        "not-a-key",
        "gsk_ffffffffffff_" + "a" * 43,  # unknown id
        f"gsk_{key_id}_" + "b" * 43,  # right id, wrong secret
    ]
    for candidate in candidates:
        with pytest.raises(Unauthorized) as caught:
            await store.authenticate(candidate)
        assert not candidate or candidate not in caught.value.message
        assert "a" * 20 not in caught.value.message and "b" * 20 not in caught.value.message


async def test_revocation_reaches_other_processes_within_the_cache_ttl(backend: Backend) -> None:
    clock = Clock()
    here = KeyStore(backend, backend, ttl_s=5.0, clock=clock)
    elsewhere = KeyStore(backend, backend, ttl_s=5.0, clock=clock)  # another API process
    key, token = await here.create("acme", [Scope.READ])
    await elsewhere.authenticate(token)  # now cached there
    await here.revoke(key.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await here.authenticate(token)  # the revoking process drops its cache entry at once
    clock.t += 4.9
    await elsewhere.authenticate(token)  # still within the TTL: the documented window
    clock.t += 0.2
    with pytest.raises(Unauthorized, match="revoked"):
        await elsewhere.authenticate(token)
    again = await here.revoke(key.id)  # idempotent
    assert again.revoked_at is not None
    with pytest.raises(NotFound):
        await here.revoke("ffffffffffff")
    with pytest.raises(NotFound):
        await here.revoke("../../etc")


async def test_auth_turns_on_when_a_first_key_appears_and_never_turns_off(
    backend: Backend,
) -> None:
    clock = Clock()
    server = KeyStore(backend, backend, ttl_s=5.0, clock=clock)
    cli = KeyStore(backend, backend)
    assert not await server.enabled()
    key, _ = await cli.create("ops", [Scope.ADMIN])
    assert not await server.enabled()  # the negative answer is cached for the TTL
    clock.t += 5.1
    assert await server.enabled()
    await cli.revoke(key.id)  # revoking every key must not open the API again
    clock.t += 100
    assert await server.enabled()
    assert await KeyStore(backend, backend).enabled()


async def test_create_validates_tenant_scopes_and_rpm(backend: Backend) -> None:
    store = KeyStore(backend, backend)
    with pytest.raises(InvalidRequest, match="tenant"):
        await store.create("no spaces", [Scope.READ])
    with pytest.raises(InvalidRequest, match="tenant"):
        await store.create("", [Scope.READ])
    with pytest.raises(InvalidRequest, match="scopes"):
        await store.create("acme", [])
    with pytest.raises(InvalidRequest, match="rpm"):
        await store.create("acme", [Scope.READ], rpm=0)
    listed = await store.list_keys()
    assert listed == []


async def test_list_is_oldest_first(backend: Backend) -> None:
    store = KeyStore(backend, backend)
    made = [(await store.create(f"t{i}", [Scope.READ]))[0] for i in range(3)]
    assert [k.id for k in await store.list_keys()] == [k.id for k in made]
