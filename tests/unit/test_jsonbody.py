"""The one parse of a request body (:mod:`genspool.api.jsonbody`): what every store can keep
passes unchanged, anything else is refused naming its path."""

from __future__ import annotations

import json

import pytest

from genspool.api.jsonbody import INT_MAX, INT_MIN, parse_json
from genspool.exceptions import InvalidRequest


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, 2.5, "s", null, true, {"b": []}]}',
        b'{"a": [%d, %d]}' % (INT_MIN, INT_MAX),
        b'{"a": %d, "b": %d}' % (INT_MIN, INT_MAX),
        b'{"f": 1.5e19, "g": [1, 15000000000000000000.0], "h": 1e300}',  # floats, not integers
        b'{"emoji": "\\ud83d\\ude00", "key \\u00e9": "\xc3\xa9"}',
        b"[" * 64 + b"]" * 64,
    ],
)
def test_what_every_store_keeps_passes_unchanged(raw: bytes) -> None:
    assert parse_json(raw) == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "param", "says"),
    [
        (b'{"a": NaN}', "a", "NaN is not a number"),
        (b'{"a": [1, {"b": -Infinity}]}', "a[1].b", "-Infinity"),
        (b'{"a": 1e400}', "a", "too large for a 64-bit float"),
        (b'{"a": [1, 2, %d]}' % (INT_MAX + 1), "a[2]", "outside the 64-bit integer range"),
        (b'{"a": [1, 2.5, %d]}' % (INT_MIN - 1), "a[2]", "outside the 64-bit integer range"),
        (b'{"a": %d}' % 2**64, "a", str(2**64)),
        (b'{"a": 1' + b"0" * 5000 + b"}", "a", "an integer of 5001 digits"),
        (b'{"a": "x\\ud800"}', "a", "lone UTF-16 surrogate"),
        (b'{"a": {"\\udfff": 1}}', "a", "a key: a lone UTF-16 surrogate"),
        (b'{"a": "\xff"}', None, "not valid UTF-8 (byte 7"),
        (b"[" * 65 + b"]" * 65, "[0][0][0][0][0][0][0][0]...", "deeper than 64 levels"),
        (b"[" * 5000 + b"]" * 5000, None, "deeper than 64 levels"),
        (b'{"a": 1,}', None, "malformed JSON in the request body at line 1 column 9"),
        (b"  ", None, "required, a JSON object"),
    ],
)
def test_what_a_store_cannot_keep_is_refused_naming_its_path(
    raw: bytes, param: str | None, says: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_json(raw)
    assert caught.value.param == param
    assert says in caught.value.message, caught.value.message
    caught.value.message.encode()  # printable: a bad key or value is never echoed raw


def test_the_depth_and_the_prefix_are_the_callers() -> None:
    assert parse_json(b"[[[]]]", max_depth=3) == [[[]]]
    with pytest.raises(InvalidRequest, match=r"^body\.x\[0\]\[0\]: nested deeper than 3"):
        parse_json(b'{"x": [[[]]]}', max_depth=3, prefix="body")
