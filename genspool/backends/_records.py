"""What the SQL backends' record roles (files, batches, webhooks, pipelines) share.

Each of those roles keeps records in a table of its own, a whole record as one JSON ``doc``
beside the few columns its queries read. They differ in their queries, not in how a query is
run: :class:`SQLRecords` runs one read or one write on the backend's connections, decodes the
docs it reads, writes a record unless one of its key was stored first (and reads that one),
and does the compare-and-set of a versioned record; each driver fills only
:meth:`~SQLRecords._rows` and :meth:`~SQLRecords._written`. :func:`page_query` writes the
newest-first (or oldest-first) cursor listing that every list of records pages by.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["QueryT", "SQLRecords", "Versioned", "page_query", "versioned_row"]

T = TypeVar("T")
#: A driver's query: ``str`` for sqlite3, pre-encoded ``bytes`` for psycopg.
QueryT = TypeVar("QueryT", str, bytes)
Row = tuple[Any, ...]


class Versioned(Protocol):
    """A record written by compare-and-set (a batch, a pipeline run)."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def terminal(self) -> bool: ...


def versioned_row(record: Versioned, doc: bytes) -> dict[str, Any]:
    """The named parameters of a versioned record's insert and update: ``next`` is the version
    an update writes, ``version`` the stored one it expects (an insert writes ``version``; an
    update's caller sets it, :meth:`SQLRecords._swap`)."""
    return {
        "id": record.id,
        "tenant": record.tenant,
        "active": not record.terminal,
        "version": record.version,
        "next": record.version,
        "doc": doc,
    }


def page_query(
    table: str,
    columns: str,
    equal: Mapping[str, Any],
    *,
    after: str | None,
    limit: int,
    mark: str,
    order: str = "desc",
    also: Sequence[tuple[str, Any]] = (),
) -> tuple[str, dict[str, Any]]:
    """A page of a table by id, and its named parameters: the rows whose column equals each
    non-None value of ``equal``, meeting each ``(condition, value)`` of ``also`` (written with
    ``{}`` where the value goes), and, after the cursor ``after``, in ``order``. ``mark`` is
    the driver's named placeholder with ``{}`` for the name (``:{}``, ``%({})s``).

    Only the filters given are written into the SQL, so each shape is planned for the index it
    can use (``x IS NULL OR col = x`` hides that from a prepared statement's generic plan).
    Table, columns and conditions are the caller's literals; the order is one of two."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    where: list[str] = []
    args: dict[str, Any] = {}
    for column, value in equal.items():
        if value is not None:
            where.append(f"{column} = {mark.format(column)}")
            args[column] = value
    for i, (condition, value) in enumerate(also):
        where.append(condition.format(mark.format(f"also{i}")))
        args[f"also{i}"] = value
    if after is not None:
        where.append(f"id {'<' if order == 'desc' else '>'} {mark.format('after')}")
        args["after"] = after
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {columns} FROM {table}{clause} ORDER BY id {order.upper()} LIMIT "
    return sql + mark.format("limit"), {**args, "limit": limit}


class SQLRecords(Generic[QueryT]):
    """Mixed into the record roles of a SQL backend, under the backend class that holds the
    connections: one statement's rows or its count, and what the roles build on those."""

    kind: str
    shown_url: str

    @abstractmethod
    async def _rows(self, query: QueryT, args: Mapping[str, Any] | Sequence[Any]) -> list[Row]:
        """The rows of one read."""

    @abstractmethod
    async def _written(self, query: QueryT, args: Mapping[str, Any] | Sequence[Any]) -> int:
        """How many rows one write (its own transaction) wrote."""

    async def _doc(
        self, query: QueryT, args: Mapping[str, Any], decode: Callable[[Any], T]
    ) -> T | None:
        """The record in the first column of the one row ``query`` reads, if any."""
        found = await self._rows(query, args)
        return decode(found[0][0]) if found else None

    async def _docs(
        self, query: QueryT, args: Mapping[str, Any] | Sequence[Any], decode: Callable[[Any], T]
    ) -> list[T]:
        return [decode(row[0]) for row in await self._rows(query, args)]

    async def _first(self, insert: QueryT, read: QueryT, args: Mapping[str, Any]) -> Row | None:
        """Write a record by ``insert`` (``… ON CONFLICT DO NOTHING``): None when it was
        written, else the one stored first, by ``read``. Read by a statement of its own: the
        insert waited for the winner to commit, but one statement's snapshot (PostgreSQL's
        ``READ COMMITTED``) could be older than that commit and miss it."""
        if await self._written(insert, args):
            return None
        found = await self._rows(read, args)
        return found[0] if found else None

    async def _swap(self, query: QueryT, row: dict[str, Any], version: int) -> bool:
        """The compare-and-set of a :func:`versioned_row`: written only over ``version``."""
        return bool(await self._written(query, {**row, "version": version}))
