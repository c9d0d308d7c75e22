"""What the SQL backends' FileStore roles share: the row layout of a file's record, and its
list (cursor paging by id, either way)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from genspool.backends._records import page_query
from genspool.core.roles import FileFilter, FileObject

__all__ = ["FILE_COLUMNS", "file_row", "list_query", "row_to_file"]

#: A file's record in the order of :class:`FileObject`'s fields, which ``row_to_file`` takes.
FILE_COLUMNS = ", ".join(f.name for f in dataclasses.fields(FileObject))


def file_row(f: FileObject) -> tuple[Any, ...]:
    return dataclasses.astuple(f)


def row_to_file(row: Sequence[Any]) -> FileObject:
    return FileObject(*row)


def list_query(flt: FileFilter, mark: str) -> tuple[str, dict[str, Any]]:
    """The query of a list and its parameters (:func:`~genspool.backends._records.page_query`;
    ``mark`` is the driver's named placeholder)."""
    alive = [("(expires_at IS NULL OR expires_at > {})", flt.alive_at)]
    return page_query(
        "files", FILE_COLUMNS, {"tenant": flt.tenant, "purpose": flt.purpose}, after=flt.after,
        limit=flt.limit, mark=mark, order=flt.order, also=alive if flt.alive_at is not None else (),
    )  # fmt: skip
