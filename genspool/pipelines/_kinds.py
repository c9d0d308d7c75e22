"""Telling apart the models of a union by the key that names each one's kind.

A YAML user writes a source, a sink or an image operation as a mapping whose one key names
what it is (``jsonl: in.jsonl``, ``resize: {width: 512}``). A plain union of such models
answers a mistake with an error from every member; a discriminator that reads the kind key
picks the one model to validate against, so the error is that model's alone, or a single
line listing the kinds when no key names one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Discriminator

__all__ = ["by_kind"]


def by_kind(what: str, *kinds: str) -> Discriminator:
    """A discriminator over models whose ``kind`` class variable is one of ``kinds``;
    ``what`` names the thing in the error, e.g. ``a sink``."""
    return Discriminator(
        _kind_of(kinds),
        custom_error_type="unknown_kind",
        custom_error_message=f"{what} names exactly one of: {', '.join(kinds)}",
    )


def _kind_of(kinds: tuple[str, ...]) -> Callable[[Any], str | None]:
    def kind(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            found: str | None = getattr(type(value), "kind", None)
            return found
        if isinstance(value, dict):
            named = [k for k in kinds if k in value]
            return named[0] if len(named) == 1 else None
        return None

    return kind
