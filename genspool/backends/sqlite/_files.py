"""The FileStore role of the SQLite backend: records of files in the ``files`` table (migration
7), reads on the reader's connection, writes each one transaction on the writer's. The bytes
go to a directory beside the database file by default (:meth:`SQLiteFiles.blob_home`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from genspool.backends._errors import translated
from genspool.backends._files import FILE_COLUMNS, file_row, list_query, row_to_file
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._conn import Connection, write
from genspool.core.roles import FileFilter, FileObject, FileStore

__all__ = ["SQLiteFiles"]

Q = load_queries("sqlite", source="files.sql", file_columns=FILE_COLUMNS)
_ERRORS = (sqlite3.Error,)


class SQLiteFiles(FileStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    kind: str
    path: str
    shown_url: str
    _w: Connection
    _r: Connection

    def blob_home(self) -> str:
        """``file:///<database path>.files``: beside the database, on the same disk."""
        return f"file://{Path(self.path).resolve()}.files"

    @translated("file_put", _ERRORS)
    async def file_put(self, record: FileObject) -> None:
        row = file_row(record)
        await self._w.run(write(lambda db: db.execute(Q["file_put"], row)))

    @translated("file_get", _ERRORS)
    async def file_get(self, file_id: str, tenant: str | None) -> FileObject | None:
        args = {"id": file_id, "tenant": tenant}
        row = await self._r.run(lambda db: db.execute(Q["file_get"], args).fetchone())
        return None if row is None else row_to_file(row)

    @translated("file_list", _ERRORS)
    async def file_list(self, flt: FileFilter) -> list[FileObject]:
        sql, args = list_query(flt, "?")
        rows = await self._r.run(lambda db: db.execute(sql, args).fetchall())
        return [row_to_file(r) for r in rows]

    @translated("file_delete", _ERRORS)
    async def file_delete(self, file_id: str, tenant: str | None) -> FileObject | None:
        args = {"id": file_id, "tenant": tenant}
        # fetchall: the statement must be done before its transaction commits.
        rows = await self._w.run(write(lambda db: db.execute(Q["file_delete"], args).fetchall()))
        return row_to_file(rows[0]) if rows else None

    @translated("files_expired", _ERRORS)
    async def files_expired(self, now: float, limit: int) -> list[FileObject]:
        rows = await self._r.run(lambda db: db.execute(Q["files_expired"], (now, limit)).fetchall())
        return [row_to_file(r) for r in rows]
