"""``{{path}}`` templates in request bodies: a route's targets, a map's pieces, a reduce call.

A template is any JSON value. Each string in it may hold ``{{ path }}`` placeholders, a dotted
path into the values (``event.detail.lang``, ``chunk``, ``outputs``; a list index is a number:
``branches.0.name``). A string that is one placeholder and nothing else takes the value itself,
keeping its type (a number stays a number, an object an object); inside longer text a value is
inserted as text (strings as they are, anything else as JSON). A placeholder whose path does
not resolve is an error naming it: a template never sends a request with a hole in it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = ["TemplateError", "placeholders", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


class TemplateError(ValueError):
    """A placeholder that names nothing in the values."""


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """A copy of ``template`` with every placeholder replaced from ``values``."""
    if isinstance(template, str):
        return _string(template, values)
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


def placeholders(template: Any) -> Iterator[str]:
    """Every placeholder path in ``template``, in order (to check a template before use)."""
    if isinstance(template, str):
        yield from (m.group(1) for m in _PLACEHOLDER.finditer(template))
    elif isinstance(template, dict):
        for value in template.values():
            yield from placeholders(value)
    elif isinstance(template, list):
        for value in template:
            yield from placeholders(value)


def _string(text: str, values: Mapping[str, Any]) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return copy.deepcopy(_lookup(whole.group(1), values))
    return _PLACEHOLDER.sub(lambda m: _text(_lookup(m.group(1), values)), text)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _lookup(path: str, values: Mapping[str, Any]) -> Any:
    current: Any = values
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise TemplateError(f"{{{{{path}}}}}: nothing at {part!r}")
    return current
