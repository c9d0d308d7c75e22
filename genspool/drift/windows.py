"""The time windows a drift report compares, written as people write them: epoch seconds, an
ISO 8601 time (``2025-06-01T12:00:00Z``; no zone: UTC), ``now``, or a time before now
(``-7d``, ``-24h``, ``-30m``, ``-90s``). By default the current window is the last day and the
baseline the week before it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from genspool.exceptions import InvalidRequest

__all__ = ["DEFAULT_BASELINE", "DEFAULT_CURRENT", "Span", "parse_time", "spans"]

_AGO = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DEFAULT_CURRENT = ("-1d", "now")
DEFAULT_BASELINE = ("-8d", "-1d")


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float  # excluded


def parse_time(text: str, now: float, *, field: str) -> float:
    """Epoch seconds of ``text``; an :class:`InvalidRequest` naming ``field`` when unreadable."""
    value = text.strip()
    if value == "now":
        return now
    if ago := _AGO.match(value):
        return now - float(ago.group(1)) * _UNIT[ago.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{field}: {text[:60]!r} is not a time: give epoch seconds, an ISO 8601 time,"
            " 'now' or a time before now such as -7d, -24h, -30m",
            param=field,
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def span(
    start: str | None, end: str | None, default: tuple[str, str], now: float, name: str
) -> Span:
    s = parse_time(start or default[0], now, field=f"{name}_start")
    e = parse_time(end or default[1], now, field=f"{name}_end")
    if e <= s:
        raise InvalidRequest(f"{name}_end must be after {name}_start", param=f"{name}_end")
    return Span(s, e)


def spans(
    now: float,
    baseline: tuple[str | None, str | None] = (None, None),
    current: tuple[str | None, str | None] = (None, None),
) -> tuple[Span, Span]:
    """The baseline and current windows, each defaulted end by end."""
    return (
        span(*baseline, DEFAULT_BASELINE, now, "baseline"),
        span(*current, DEFAULT_CURRENT, now, "current"),
    )
