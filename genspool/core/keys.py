"""API keys: their format, their stored (hashed) records, and the store that checks them.

A key reads ``gsk_<id>_<secret>``: the id finds the record (backend KV, namespace ``keys``),
the secret is checked against the record's SHA-256 digest in constant time. The secret is 256
random bits made by genspool, never a password a person chose, so a fast hash is enough: a
stolen digest cannot be brute-forced at any hash speed, and a slow KDF (bcrypt, scrypt) would
only add tens of milliseconds to every request. The plain key exists once, in the output of
``create``.

:class:`KeyStore` caches records for ``ttl_s`` seconds, so a revocation made by any process
(the CLI, another API process) takes effect everywhere within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson

from genspool.core.roles import Coordination, KeyValue
from genspool.exceptions import InvalidRequest, NotFound, Unauthorized

__all__ = [
    "ApiKey",
    "KeyStore",
    "Scope",
    "SecretsFilter",
    "digest",
    "parse_scopes",
    "parse_token",
    "redact",
    "redact_every_record",
    "redact_record",
]

NAMESPACE = "keys"
PREFIX = "gsk_"
_ID = re.compile(r"^[0-9a-f]{12}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: A key's shape: the id says which key it was and stays; the secret after it goes.
_KEY = re.compile(r"(gsk_[0-9a-f]{12}_)[A-Za-z0-9_-]+")
_NOT_DONE = r"(?!\[redacted\])"  # a value blanked by an earlier rule is not blanked again
_SCHEME = re.compile(rf"(?i)\b((?:bearer|basic)\s+){_NOT_DONE}[^\s\"',;)\]]+")
#: A header that carries a key, as text (``x-api-key: k``) or as a repr (``(b'x-api-key', b'k'``).
_HEADER = re.compile(
    rf"""(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token)"""
    rf"""((?>['"]?\s*[:,=]\s*(?:b?['"])?\s*))(?!(?:bearer|basic)\s){_NOT_DONE}([^'"\s,;)\]]+)"""
)
#: ``name=value`` anywhere (a query string, a form, a message); the name is decoded before it
#: is matched, since ``?tok%65n=`` is the parameter ``token`` to every query parser.
_PARAM = re.compile(r"(?<![A-Za-z0-9%_.~-])([A-Za-z0-9%_.~+-]+)=")
_RAW_VALUE = re.compile(rf"{_NOT_DONE}[^&\s\"'<>;]*")
#: Once the text is decoded an ``&`` may have been ``%26`` inside the value: blank to the end.
_DECODED_VALUE = re.compile(rf"{_NOT_DONE}[^\s\"'<>]*")
_SECRET_NAMES = frozenset(
    {"token", "key", "apikey", "api_key", "auth", "authorization", "bearer", "access_token"}
)


class Scope(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """``"submit,read"`` (or a list) → scopes; an unknown or empty one is an error."""
    raw = text.split(",") if isinstance(text, str) else text
    names = [n.strip() for n in raw if n.strip()]
    unknown = [n for n in names if n not in {s.value for s in Scope}]
    if unknown or not names:
        raise InvalidRequest(
            f"scopes: {', '.join(unknown) or 'none given'}; choose from submit, read, admin",
            param="scopes",
        )
    return frozenset(Scope(n) for n in names)


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise InvalidRequest(
            "tenant: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param="tenant",
        )
    return tenant


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``gsk_<id>_<secret>`` → ``(id, secret)``; None when it is not shaped like a key."""
    if not token.startswith(PREFIX):
        return None
    key_id, _, secret = token[len(PREFIX) :].partition("_")
    if not _ID.match(key_id) or len(secret) < 20:
        return None
    return key_id, secret


def redact(text: str) -> str:
    """``text`` with API key secrets, bearer tokens, key headers and the values of key-like
    parameters (``token=``, ``api_key=``…) blanked out, whatever the case or percent-encoding
    of their names: when decoding the text uncovers more, the decoded text is returned,
    blanked."""
    clean = _scrub(text, _RAW_VALUE)
    decoded = _decoded(clean)
    if decoded == clean:
        return clean
    again = _scrub(decoded, _DECODED_VALUE)
    return clean if again == decoded else again


def _scrub(text: str, value: re.Pattern[str]) -> str:
    text = _SCHEME.sub(lambda m: m[1] + "[redacted]", text)
    text = _HEADER.sub(lambda m: m[1] + m[2] + "[redacted]", text)
    text = _params(text, value)
    return _KEY.sub(lambda m: m[1] + "[redacted]", text)


def _params(text: str, value: re.Pattern[str]) -> str:
    out, at = [], 0
    for name in _PARAM.finditer(text):
        found = value.match(text, name.end())
        if name.start() < at or found is None:
            continue  # inside a value blanked here, or one blanked already
        if _secret_name(name[1]) or _KEY.search(_decoded(found[0])):
            out += [text[at : name.end()], "[redacted]"]
            at = found.end()
    return "".join(out) + text[at:]


def _secret_name(name: str) -> bool:
    plain = _decoded(name).strip().lower().replace("-", "_")
    return plain in _SECRET_NAMES or plain.endswith(("_token", "_api_key", "_apikey"))


def _decoded(text: str) -> str:
    """``text`` percent-decoded until it stops changing (a doubly encoded ``%2565`` too)."""
    for _ in range(4):
        plain = urllib.parse.unquote(text)
        if plain == text:
            break
        text = plain
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Blank secrets in ``record``'s message, its traceback and its stack, in place."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it, as logging does
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        # Formatted now, so that every handler's formatter uses this blanked text.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class SecretsFilter(logging.Filter):
    """A logging filter (for handlers) that redacts secrets from every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class _RedactingFactory:
    """A log record factory that blanks secrets as each record is made."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        redact_record(record)
        return record


def redact_every_record() -> Callable[[], None]:
    """From now on, every log record of this process is made with its secrets blanked, so no
    handler, capture or library logger — whatever its level — ever holds a key (a handler
    filter sees only the records of its own handlers). Returns what undoes it."""
    current = logging.getLogRecordFactory()
    if isinstance(current, _RedactingFactory):
        return lambda: None
    logging.setLogRecordFactory(_RedactingFactory(current))
    return lambda: logging.setLogRecordFactory(current)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant: str
    scopes: frozenset[Scope]
    digest: str
    created_at: float
    name: str | None = None
    rpm: int | None = None
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: Scope) -> bool:
        """``admin`` includes every other scope."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, digest(secret))

    def public(self) -> dict[str, Any]:
        """The record without its digest: what lists and APIs show."""
        return {
            "id": self.id,
            "object": "api_key",
            "tenant": self.tenant,
            "scopes": sorted(self.scopes),
            "name": self.name,
            "rpm": self.rpm,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }

    def dumps(self) -> bytes:
        return orjson.dumps({**self.public(), "digest": self.digest})

    @classmethod
    def loads(cls, raw: bytes) -> ApiKey:
        d = orjson.loads(raw)
        return cls(
            id=d["id"],
            tenant=d["tenant"],
            scopes=frozenset(Scope(s) for s in d["scopes"]),
            digest=d["digest"],
            created_at=d["created_at"],
            name=d.get("name"),
            rpm=d.get("rpm"),
            revoked_at=d.get("revoked_at"),
        )


_DUMMY = digest("not a key")


class KeyStore:
    """API key records in the backend KV, with a short-lived cache for the request path."""

    def __init__(
        self,
        kv: KeyValue,
        limits: Coordination,
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
    ) -> None:
        self.kv, self.limits = kv, limits
        self.ttl_s, self.clock, self.max_cached = ttl_s, clock, max_cached
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._enabled_until = -1.0  # when to look again for a first key; inf once one exists

    async def create(
        self,
        tenant: str,
        scopes: Iterable[Scope],
        *,
        name: str | None = None,
        rpm: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; returns its record and the plain key (to be shown once)."""
        if rpm is not None and rpm < 1:
            raise InvalidRequest("rpm: must be at least 1", param="rpm")
        key_id = secrets.token_hex(6)
        while await self.kv.kv_get(NAMESPACE, key_id) is not None:
            key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=key_id,
            tenant=check_tenant(tenant),
            scopes=parse_scopes(list(scopes)),
            digest=digest(secret),
            created_at=time.time(),
            name=name,
            rpm=rpm,
        )
        await self.kv.kv_put(NAMESPACE, key_id, key.dumps())
        self._enabled_until = float("inf")
        return key, f"{PREFIX}{key_id}_{secret}"

    async def list_keys(self) -> list[ApiKey]:
        stored = await self.kv.kv_list(NAMESPACE)
        return sorted((ApiKey.loads(v) for v in stored.values()), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good (idempotent); the record stays, so auth stays on."""
        raw = await self.kv.kv_get(NAMESPACE, key_id) if _ID.match(key_id) else None
        if raw is None:
            raise NotFound(f"no API key {key_id!r}")
        key = ApiKey.loads(raw)
        if not key.revoked:
            key = replace(key, revoked_at=time.time())
            await self.kv.kv_put(NAMESPACE, key_id, key.dumps())
        self._cache.pop(key_id, None)
        return key

    async def enabled(self) -> bool:
        """Whether any key was ever created (revoked ones count: revoking every key must not
        open the API). Once true it stays true; while false it is looked up every ``ttl_s``."""
        if self.clock() < self._enabled_until:
            return self._enabled_until == float("inf")
        found = bool(await self.kv.kv_list(NAMESPACE))
        self._enabled_until = float("inf") if found else self.clock() + self.ttl_s
        return found

    async def authenticate(self, token: str | None) -> ApiKey:
        """The live key for ``token``, or Unauthorized (never echoing the token)."""
        if not token:
            raise Unauthorized(
                "missing API key: send it as 'Authorization: Bearer <key>'"
                " (create one with: genspool keys create)"
            )
        parsed = parse_token(token)
        key = await self._get(parsed[0]) if parsed else None
        if parsed is None or key is None:
            hmac.compare_digest(_DUMMY, digest(token))  # unknown ids cost the same time
            raise Unauthorized("invalid API key")
        if not key.matches(parsed[1]):
            raise Unauthorized("invalid API key")
        if key.revoked:
            raise Unauthorized("this API key was revoked")
        return key

    async def _get(self, key_id: str) -> ApiKey | None:
        t = self.clock()
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > t:
            return hit[1]
        raw = await self.kv.kv_get(NAMESPACE, key_id)
        key = None if raw is None else ApiKey.loads(raw)
        if len(self._cache) >= self.max_cached:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > t}
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
        self._cache[key_id] = (t + self.ttl_s, key)
        return key
