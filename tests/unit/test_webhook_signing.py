"""Standard Webhooks signing: the specification's published test vector, and every way
``verify`` refuses a delivery (each with a message that says which)."""

from __future__ import annotations

import pytest

from genspool.webhooks import WebhookVerificationError, new_secret, sign, verify
from genspool.webhooks.signing import signed_headers

# The reference vector of the Standard Webhooks test suite (also svix-webhooks'
# go/webhook_test.go TestWebhookSign), written here by hand.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
HEADERS = {"webhook-id": MSG_ID, "webhook-timestamp": str(STAMP), "webhook-signature": SIGNATURE}


def test_the_published_vector_signs_and_verifies() -> None:
    assert sign(SECRET, MSG_ID, STAMP, BODY) == SIGNATURE
    verify(SECRET, HEADERS, BODY, now=STAMP + 10)


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = {**HEADERS, "Webhook-Signature": f"v1,bm90IGl0 {SIGNATURE}"}
    del headers["webhook-signature"]
    verify(SECRET, headers, BODY, now=STAMP)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": BODY + b" "}, "no v1 signature"),
        ({"secret": new_secret()}, "no v1 signature"),
        ({"now": STAMP + 301}, "over the 300 s tolerance"),
        ({"now": STAMP - 301}, "over the 300 s tolerance"),
        ({"drop": "webhook-id"}, "webhook-id header is missing"),
        ({"drop": "webhook-signature"}, "webhook-signature header is missing"),
        ({"stamp": "yesterday"}, "is not Unix seconds"),
        ({"secret": "whsec_not*base64"}, "not 'whsec_' followed by base64"),
    ],
)
def test_a_forged_stale_or_incomplete_delivery_is_refused(
    change: dict[str, object], message: str
) -> None:
    headers = dict(HEADERS)
    if "drop" in change:
        del headers[str(change["drop"])]
    if "stamp" in change:
        headers["webhook-timestamp"] = str(change["stamp"])
    body = change.get("body", BODY)
    assert isinstance(body, bytes)
    now = change.get("now", STAMP)
    assert isinstance(now, int)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(str(change.get("secret", SECRET)), headers, body, now=now)


def test_headers_made_now_verify_with_a_new_secret() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    headers = signed_headers(secret, "msg_1", b"{}", now=1_700_000_000.5)
    assert headers["webhook-timestamp"] == "1700000000"
    verify(secret, headers, b"{}", now=1_700_000_000)
