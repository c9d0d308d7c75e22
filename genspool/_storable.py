"""JSON values every store can encode, and the repair of those it cannot.

Every backend encodes results with orjson, which refuses two things a model's answer can hold:
a lone surrogate (``"\\ud800"``: servers emit one when a token splits an emoji, and the stdlib
parser keeps it) and an integer outside 64 bits. Such an answer is repaired, not failed: a lone
surrogate becomes U+FFFD (what a reader would be shown for it anyway) and an integer outside
64 bits becomes the nearest float (what orjson itself parses such a number as). A value that
still cannot be encoded (an integer past the float range, a non-string key) raises
:class:`Unstorable`, and its job fails without a retry (``unstorable_result``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from genspool.exceptions import ModelError

__all__ = ["Unstorable", "UnstorableResult", "loads", "storable"]

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class Unstorable(ValueError):
    """A value no store can encode, even repaired."""


class UnstorableResult(ModelError):
    """The model answered, but with a value no store can encode: retrying would not help."""

    code = "unstorable_result"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def loads(content: bytes) -> Any:
    """Parse JSON into a storable value. orjson first; what it refuses for its content (a lone
    surrogate) the stdlib parser reads, and the value is repaired (:func:`storable`). Raises
    ``ValueError`` when the text is not JSON, :class:`Unstorable` when it cannot be repaired."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    return storable(json.loads(content))


def storable(value: Any) -> Any:
    """``value`` itself if orjson encodes it, else a repaired copy; raises Unstorable."""
    try:
        orjson.dumps(value)
        return value
    except orjson.JSONEncodeError:
        pass
    try:
        fixed = _repaired(value)
        orjson.dumps(fixed)
    except (orjson.JSONEncodeError, OverflowError) as exc:
        raise Unstorable(f"cannot be stored: {exc}") from exc
    return fixed


def _repaired(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, dict):
            return {_text(k) if isinstance(k, str) else k: _repaired(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_repaired(v) for v in value]
        return value
    return value if _INT_MIN <= value <= _INT_MAX else float(value)


def _text(text: str) -> str:
    """Lone surrogates replaced by U+FFFD (a pair split in two code points is joined)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
