"""What every sink writer shares: its interface, its output and error, and how an item's
fields are rendered (apart from :mod:`genspool.pipelines.sinks` so that the table writer,
:mod:`genspool.pipelines._table`, can use them without importing the sinks)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from genspool.fanout.template import TemplateError, render

__all__ = ["SinkError", "SinkOutput", "SinkWriter", "cell", "render_fields"]

#: The status of an item every step of which ran (genspool.core.pipeline.ItemStatus.DONE).
_DONE: Final = "done"


class SinkError(ValueError):
    """A sink that cannot be written; the message names the sink, item or path."""


@dataclass(frozen=True, slots=True)
class SinkOutput:
    """What a sink produced: ``data`` to store as a Files API file (None for a table)."""

    data: bytes | None
    filename: str
    media_type: str | None
    rows: int
    #: The local file written too, if any.
    path: Path | None = None


class SinkWriter(ABC):
    """One sink of one run: :meth:`write` chunks of items in order, then :meth:`close`."""

    rows: int = 0

    @abstractmethod
    async def write(self, items: Sequence[dict[str, Any]]) -> None:
        """Add ``items`` (the next ones in source order)."""

    @abstractmethod
    async def close(self) -> SinkOutput:
        """Finish: write any local file and return what to store."""


def render_fields(fields: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` rendered for ``item``. A placeholder that names nothing is an error for an
    item whose steps all ran; for a failed or skipped one (its later steps have no output) the
    field is null, so one failed item does not fail the whole sink."""
    out: dict[str, Any] = {}
    for name, template in fields.items():
        try:
            out[name] = render(template, item)
        except TemplateError as exc:
            if item.get("status") == _DONE:
                raise SinkError(f"item {item.get('key')!r}, field {name!r}: {exc}") from None
            out[name] = None
    return out


def cell(value: Any) -> str | None:
    """A rendered value as text: strings as they are, null as nothing, the rest as JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
