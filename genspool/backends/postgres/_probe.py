"""What the pgvector of a PostgreSQL server can do, asked once when a vector store opens.

A store on PostgreSQL needs to know before its first query whether it can build an HNSW index
(pgvector 0.5) and whether filtered queries on that index are complete: before pgvector 0.8's
iterative index scans (``SET hnsw.iterative_scan = relaxed_order``) the index hands over its
``hnsw.ef_search`` nearest candidates (40 by default) and a ``WHERE`` clause filters them
afterwards, so a query whose filter keeps 1 % of the rows returns on average half a row of its
k=10, silently (measured in ``tests/integration/test_pgvector_server.py``; the planner picks
that plan by itself). Without iterative scans a store must search exactly, or raise
``ef_search``.

The probe only reads; it runs in a transaction (a savepoint inside the caller's) of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["PgVectorCaps", "capabilities"]

_EXTENSION = """
SELECT a.default_version, a.installed_version, n.nspname
FROM pg_available_extensions a
LEFT JOIN pg_extension e ON e.extname = a.name
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE a.name = 'vector'
"""

# Custom settings exist only once their library is loaded into the backend, and a SET before
# that leaves a placeholder of type string: hence the cast that loads vector.so, and the vartype.
_LOAD = "SELECT '[0]'::{}.vector"
_FEATURES = """
SELECT EXISTS (SELECT FROM pg_am WHERE amname = 'hnsw'),
       EXISTS (SELECT FROM pg_settings WHERE name = 'hnsw.iterative_scan' AND vartype = 'enum')
"""


@dataclass(frozen=True, slots=True)
class PgVectorCaps:
    """pgvector on one database: ``available`` (``CREATE EXTENSION vector`` would find it),
    ``installed`` in this database at ``version`` (``()`` when not), with ``hnsw`` indexes and
    ``iterative_scan`` (the ``hnsw.iterative_scan`` setting)."""

    available: bool
    installed: bool
    version: tuple[int, ...] = ()
    hnsw: bool = False
    iterative_scan: bool = False
    #: The schema the extension's types and operators are in (when installed).
    schema: str | None = None


async def capabilities(conn: AsyncConnection[Any]) -> PgVectorCaps:
    """Ask the database ``conn`` is connected to what its pgvector can do."""
    async with conn.transaction():
        row = await (await conn.execute(_EXTENSION)).fetchone()
        if row is None or row[1] is None:
            return PgVectorCaps(available=row is not None, installed=False)
        await conn.execute(sql.SQL(_LOAD).format(sql.Identifier(row[2])))
        hnsw, iterative = await (await conn.execute(_FEATURES)).fetchone() or (False, False)
    return PgVectorCaps(True, True, _version(row[1]), bool(hnsw), bool(iterative), row[2])


def _version(text: str) -> tuple[int, ...]:
    """``"0.8.2"`` → ``(0, 8, 2)``; a part's non-digit tail (``"0-dev"``) is dropped."""
    parts = []
    for part in text.split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
