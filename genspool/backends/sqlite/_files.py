"""The FileStore role of the SQLite backend: records of files in the ``files`` table (migration
7), reads on the reader's connection, writes each one transaction on the writer's. The bytes
go to a directory beside the database file by default (:meth:`SQLiteFiles.blob_home`)."""

from __future__ import annotations

from pathlib import Path

from genspool.backends._errors import translated
from genspool.backends._files import FILE_COLUMNS, file_row, list_query, row_to_file
from genspool.backends._sql import load_queries
from genspool.backends.sqlite._conn import write
from genspool.backends.sqlite._records import ERRORS, SQLiteRecords
from genspool.core.roles import FileFilter, FileObject, FileStore

__all__ = ["SQLiteFiles"]

Q = load_queries("sqlite", source="files.sql", file_columns=FILE_COLUMNS)


class SQLiteFiles(SQLiteRecords, FileStore):
    """Mixed into :class:`~genspool.backends.sqlite.SQLiteBackend`, whose connections it uses."""

    path: str

    def blob_home(self) -> str:
        """``file:///<database path>.files``: beside the database, on the same disk."""
        return f"file://{Path(self.path).resolve()}.files"

    @translated("file_put", ERRORS)
    async def file_put(self, record: FileObject) -> None:
        await self._written(Q["file_put"], file_row(record))

    @translated("file_get", ERRORS)
    async def file_get(self, file_id: str, tenant: str | None) -> FileObject | None:
        found = await self._rows(Q["file_get"], {"id": file_id, "tenant": tenant})
        return row_to_file(found[0]) if found else None

    @translated("file_list", ERRORS)
    async def file_list(self, flt: FileFilter) -> list[FileObject]:
        return [row_to_file(r) for r in await self._rows(*list_query(flt, ":{}"))]

    @translated("file_delete", ERRORS)
    async def file_delete(self, file_id: str, tenant: str | None) -> FileObject | None:
        args = {"id": file_id, "tenant": tenant}
        # fetchall: the statement must be done before its transaction commits.
        rows = await self._w.run(write(lambda db: db.execute(Q["file_delete"], args).fetchall()))
        return row_to_file(rows[0]) if rows else None

    @translated("files_expired", ERRORS)
    async def files_expired(self, now: float, limit: int) -> list[FileObject]:
        return [row_to_file(r) for r in await self._rows(Q["files_expired"], (now, limit))]
