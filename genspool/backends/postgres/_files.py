"""The FileStore role of the PostgreSQL backend: records of files in the ``files`` table
(migration 6), each call one statement on a pooled connection. The bytes go to the SQL blob
store in the same schema by default (:meth:`PostgresFiles.blob_home`), so that every process
of a scaled-out deployment reads what any other wrote, with no shared directory."""

from __future__ import annotations

from urllib.parse import urlencode

from genspool.backends._errors import translated
from genspool.backends._files import FILE_COLUMNS, list_query, row_to_file
from genspool.backends._sql import load_queries
from genspool.backends.postgres._records import ERRORS, PostgresRecords, encoded
from genspool.core.roles import FileFilter, FileObject, FileStore

__all__ = ["PostgresFiles", "Q"]

Q = encoded(load_queries("postgres", source="files.sql", file_columns=FILE_COLUMNS))
#: The blob store's own pool: uploads and downloads hold a connection a chunk at a time.
BLOB_POOL_MAX = 4


class PostgresFiles(PostgresRecords, FileStore):
    """Mixed into :class:`~genspool.backends.postgres.PostgresBackend`, whose pool it uses."""

    def blob_home(self) -> str:
        """This schema's URL (credentials included: it is never shown, only opened)."""
        s = self._db.settings
        own = urlencode({"schema": s.schema, "pool_max": BLOB_POOL_MAX})
        return f"{s.conninfo}{'&' if '?' in s.conninfo else '?'}{own}"

    @translated("file_put", ERRORS)
    async def file_put(self, record: FileObject) -> None:
        params = {name: getattr(record, name) for name in FILE_COLUMNS.split(", ")}
        await self._written(Q["file_put"], params)

    @translated("file_get", ERRORS)
    async def file_get(self, file_id: str, tenant: str | None) -> FileObject | None:
        found = await self._rows(Q["file_get"], {"id": file_id, "tenant": tenant})
        return row_to_file(found[0]) if found else None

    @translated("file_list", ERRORS)
    async def file_list(self, flt: FileFilter) -> list[FileObject]:
        query, args = list_query(flt, "%({})s")
        return [row_to_file(r) for r in await self._rows(query.encode(), args)]

    @translated("file_delete", ERRORS)
    async def file_delete(self, file_id: str, tenant: str | None) -> FileObject | None:
        found = await self._rows(Q["file_delete"], {"id": file_id, "tenant": tenant})
        return row_to_file(found[0]) if found else None

    @translated("files_expired", ERRORS)
    async def files_expired(self, now: float, limit: int) -> list[FileObject]:
        found = await self._rows(Q["files_expired"], {"now": now, "limit": limit})
        return [row_to_file(r) for r in found]
