"""The one parse of a request body: JSON that every backend can store, or a 400 naming the field.

Python's ``json`` accepts what no store can keep (SQLite and PostgreSQL refuse it, or orjson
cannot write it for Redis and NATS): ``NaN`` and ``Infinity``, integers of any size, lone
surrogate escapes (``"\\ud800"``), any depth. orjson refuses all of these but two: an integer
above 64 bits comes back as a float (silently), and its own depth limit is 1024. So the body is
parsed once with orjson and its tree walked once, for the depth (:data:`DEFAULT_MAX_DEPTH`,
setting ``GENSPOOL_MAX_JSON_DEPTH``) and the integers (signed 64 bits: what every store keeps
as a number). Only a body that is refused is parsed again, leniently, by the standard library,
to name the field at fault: a good body costs one orjson parse and one walk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from genspool.exceptions import InvalidRequest

__all__ = ["DEFAULT_MAX_DEPTH", "INT_MAX", "INT_MIN", "field_path", "parse_json"]

#: How deep objects and arrays may nest (the body itself is level 1).
DEFAULT_MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: A float this large may be an integer literal that orjson turned into a float.
_SUSPECT = float(2**63)

_Path = list[str | int]
#: What is wrong with a scalar (or a dict key), or None.
_Judge = Callable[[Any], str | None]


class _NonFinite:
    """What the lenient parse makes of ``NaN``, ``Infinity`` and ``-Infinity``."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Found(Exception):
    """A refused value, and where it is (innermost step first while the walk unwinds)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason, self.path = reason, _Path()


def parse_json(raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, prefix: str = "") -> Any:
    """The JSON value of ``raw``, or :class:`InvalidRequest` naming the field at fault (its path
    after ``prefix``, e.g. ``body.messages[0].content``)."""
    if not raw.strip():
        raise InvalidRequest("body: required, a JSON object", param=prefix or None)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _diagnose(raw, max_depth, prefix, str(exc)) from None
    try:
        _walk(value, 1, max_depth, _judge_fast)
    except _Found as found:
        if found.reason == _SUSPECT_REASON:
            return _recheck(raw, value, max_depth, prefix)
        raise _refusal(found, prefix) from None
    return value


def field_path(prefix: str, path: Iterable[str | int]) -> str:
    """``prefix.a[0].b``: a field's path as the error messages write it."""
    out = prefix
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "body"


def _walk(value: Any, level: int, limit: int, judge: _Judge) -> None:
    kind = type(value)
    if kind is dict:
        if level > limit:
            raise _Found(_too_deep(limit))
        for key, item in value.items():
            if (reason := judge(key)) is not None:
                raise _Found(f"a key: {reason}")  # named by its object: it cannot be printed
            try:
                if type(item) in _CONTAINERS or judge(item) is not None:
                    _walk(item, level + 1, limit, judge)
            except _Found as found:
                found.path.append(key)
                raise
    elif kind is list:
        if level > limit:
            raise _Found(_too_deep(limit))
        if judge is _judge_fast and _plain(value):
            return
        for i, item in enumerate(value):
            if type(item) in _CONTAINERS or judge(item) is not None:
                try:
                    _walk(item, level + 1, limit, judge)
                except _Found as found:
                    found.path.append(i)
                    raise
    elif (reason := judge(value)) is not None:
        raise _Found(reason)


_CONTAINERS = (dict, list)
_SUSPECT_REASON = "suspect"
_TEXT = {str, bool, type(None)}
_NUMBERS = {int, float}


def _plain(items: list[Any]) -> bool:
    """True for an array of scalars with nothing to refuse, found in C-speed passes (a 4 MB
    array of token ids is walked in a few ms, not item by item)."""
    kinds = set(map(type, items))
    if kinds <= _TEXT:
        return True
    # Numbers strictly inside ±2^63: in range if integers, not suspect if floats.
    return kinds <= _NUMBERS and min(items) > -_SUSPECT and max(items) < _SUSPECT


def _judge_fast(value: Any) -> str | None:
    """After orjson: only integers and huge floats can still be wrong."""
    kind = type(value)
    if kind is int and not INT_MIN <= value <= INT_MAX:
        return _out_of_range(value)
    if kind is float and abs(value) >= _SUSPECT:
        return _SUSPECT_REASON
    return None


def _judge_all(value: Any) -> str | None:
    """After the lenient parse: everything orjson would have refused too."""
    if isinstance(value, _NonFinite):
        return f"{value.name} is not a number JSON can carry; send a finite number or null"
    if isinstance(value, _Huge):
        return f"an integer of {value.digits} digits is outside {_RANGE}"
    if type(value) is float and not math.isfinite(value):
        return "a number too large for a 64-bit float; send a finite number or null"
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return _out_of_range(value)
    if type(value) is str:
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            return (
                f"a lone UTF-16 surrogate escape ({value[exc.start]!a}) is not a"
                " character; escape both halves of a pair, or send the character itself"
            )
    return None


_RANGE = "the 64-bit integer range [-2^63, 2^63-1]"


def _out_of_range(value: int) -> str:
    shown = str(value) if abs(value) < 10**40 else "an integer of over 40 digits"
    return f"{shown} is outside {_RANGE}"


def _too_deep(limit: int) -> str:
    return f"nested deeper than {limit} levels of objects and arrays (GENSPOOL_MAX_JSON_DEPTH)"


def _refusal(found: _Found, prefix: str) -> InvalidRequest:
    path = found.path[::-1]
    where = field_path(prefix, path[:8]) + ("..." if len(path) > 8 else "")
    return InvalidRequest(f"{where}: {found.reason}", param=where)


def _recheck(raw: bytes, value: Any, limit: int, prefix: str) -> Any:
    """A float of 2^63 or more: an integer literal turned float is refused, a float kept."""
    try:
        _walk(_lenient(raw), 1, limit, _judge_all)
    except _Found as found:
        raise _refusal(found, prefix) from None
    return value


def _lenient(raw: bytes) -> Any:
    return json.loads(raw.decode(), parse_constant=_NonFinite, parse_int=_to_int)


class _Huge:
    """An integer literal above Python's 4300-digit limit: out of range all the same."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _to_int(text: str) -> int | _Huge:
    try:
        return int(text)
    except ValueError:
        return _Huge(text)


def _diagnose(raw: bytes, limit: int, prefix: str, orjson_says: str) -> InvalidRequest:
    """Why orjson refused ``raw``, with the field when the lenient parse can find it."""
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        return InvalidRequest(
            f"{prefix or 'body'}: not valid UTF-8 (byte {exc.start} is {bad!r});"
            " send the body as UTF-8 JSON",
            param=prefix or None,
        )
    try:
        value = _lenient(raw)
    except RecursionError:
        return InvalidRequest(f"{prefix or 'body'}: {_too_deep(limit)}", param=prefix or None)
    except json.JSONDecodeError as exc:
        return InvalidRequest(
            f"malformed JSON in the request body at line {exc.lineno} column {exc.colno}:"
            f" {exc.msg}",
            param=prefix or None,
        )
    try:
        _walk(value, 1, limit, _judge_all)
    except _Found as found:
        return _refusal(found, prefix)
    return InvalidRequest(f"malformed JSON in the request body: {orjson_says}", param=None)
