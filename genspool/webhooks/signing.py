"""Standard Webhooks signatures (https://www.standardwebhooks.com): how genspool signs a
delivery and how a receiver checks one.

A delivery carries three headers: ``webhook-id`` (the message id, the same on every retry, so a
receiver can drop a repeat), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed by the secret's bytes, of
``"{id}.{timestamp}.{body}"``. The header may hold several space-separated signatures (while a
secret is rotated); one that matches is enough. Secrets are ``whsec_`` and base64 of random
bytes. The timestamp is signed so that a captured delivery cannot be replayed later: ``verify``
refuses one older (or newer) than ``tolerance_s``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from genspool.exceptions import InvalidRequest

__all__ = [
    "PREFIX",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

PREFIX = "whsec_"
#: How far a delivery's timestamp may be from the receiver's clock (the spec suggests 5 min).
TOLERANCE_S = 300.0


class WebhookVerificationError(InvalidRequest):
    """A delivery whose headers are missing, stale or not signed with the receiver's secret."""

    code = "webhook_verification_failed"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, ``whsec_`` and base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise WebhookVerificationError(
            "the secret is not 'whsec_' followed by base64 (copy it as it was shown)"
        ) from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one delivery: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, *, now: float) -> dict[str, str]:
    """The three headers of a delivery made at ``now``."""
    stamp = int(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get(name)
    if not value:
        raise WebhookVerificationError(f"the {name} header is missing")
    return value


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a delivery as received (the raw body, not re-serialized JSON); raises
    :class:`WebhookVerificationError` saying what is wrong, returns None when it is genuine."""
    msg_id = _header(headers, "webhook-id")
    stamp_text = _header(headers, "webhook-timestamp")
    if not stamp_text.isdigit():
        raise WebhookVerificationError(f"webhook-timestamp {stamp_text!r} is not Unix seconds")
    stamp = int(stamp_text)
    skew = abs((time.time() if now is None else now) - stamp)
    if skew > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {skew:.0f} s from now, over the {tolerance_s:g} s tolerance"
        )
    expected = sign(secret, msg_id, stamp, body).partition(",")[2]
    for given in _header(headers, "webhook-signature").split():
        version, _, value = given.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise WebhookVerificationError("no v1 signature in webhook-signature matches the secret")
