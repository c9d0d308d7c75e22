"""What the SQL backends' FileStore roles share: the row layout of a file's record, and the
``WHERE`` of a list (cursor paging by id, either way)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from genspool.core.roles import FileFilter, FileObject

__all__ = ["FILE_COLUMNS", "file_row", "list_query", "row_to_file"]

#: A file's record in the order of :class:`FileObject`'s fields, which ``row_to_file`` takes.
FILE_COLUMNS = ", ".join(f.name for f in dataclasses.fields(FileObject))


def file_row(f: FileObject) -> tuple[Any, ...]:
    return dataclasses.astuple(f)


def row_to_file(row: Sequence[Any]) -> FileObject:
    return FileObject(*row)


def list_query(flt: FileFilter, mark: str) -> tuple[str, list[Any]]:
    """The query of a list and its parameters; ``mark`` is the driver's placeholder (``?``,
    ``%s``). Only the order is written into the SQL, and only as one of two literals."""
    if flt.order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {flt.order!r}")
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("tenant", flt.tenant), ("purpose", flt.purpose)):
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    if flt.alive_at is not None:
        where.append(f"(expires_at IS NULL OR expires_at > {mark})")
        args.append(flt.alive_at)
    if flt.after is not None:
        where.append(f"id {'<' if flt.order == 'desc' else '>'} {mark}")
        args.append(flt.after)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    order = "DESC" if flt.order == "desc" else "ASC"
    sql = f"SELECT {FILE_COLUMNS} FROM files {clause} ORDER BY id {order} LIMIT {mark}"
    return sql, [*args, flt.limit]
