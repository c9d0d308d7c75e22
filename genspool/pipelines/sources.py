"""Where a pipeline's items come from: JSONL, CSV, a directory, a SQL query, or inline items.

A source is a config model whose one key names its kind, as a YAML user writes it
(``jsonl: data/in.jsonl``, ``sql: {url: …, query: …}``). :func:`read_items` yields its records
in a stable order, one dict each, skipping the first ``skip`` (a resumed run reads again past
what it registered). Nothing is read whole: files are streamed a chunk at a time and SQL rows
are fetched in chunks (a PostgreSQL query through a server-side cursor), so a 200 MB source
costs about one chunk of memory. A JSONL or CSV source is a path on the server's disk or a
Files API id (``file-…``), read through the ``open_file`` the runner passes.

Every failure is a :class:`SourceError` naming where: ``jsonl line 7: not a JSON object``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import hashlib
import inspect
import mimetypes
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, ClassVar, Final, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, Tag, field_validator

from genspool.exceptions import GenspoolError
from genspool.pipelines._kinds import by_kind
from genspool.pipelines._sql import SqlError, jsonable, postgres_rows, sqlite_path, sqlite_rows

__all__ = [
    "CsvSource",
    "DirectorySource",
    "ItemsSource",
    "JsonlSource",
    "OpenFile",
    "Source",
    "SourceError",
    "SqlQuery",
    "SqlSource",
    "closing",
    "is_file_id",
    "open_bytes",
    "read_items",
]

#: ``async (file_id) -> chunks``: the Files service's tenant-scoped reader (an async function
#: returning an async iterator, or an async generator function).
OpenFile = Callable[[str], Awaitable[AsyncIterator[bytes]] | AsyncIterator[bytes]]

CHUNK_BYTES: Final = 256 * 1024
#: Rows fetched per round trip; a chunk of wide rows stays well under a megabyte.
SQL_ROWS: Final = 500
#: Suffixes whose contents a directory item carries as ``text``.
TEXT_SUFFIXES: Final = frozenset({".txt", ".md", ".csv", ".json", ".html"})
T = TypeVar("T")
_FILE_ID: Final = re.compile(r"file-[0-9A-Za-z]+")


class SourceError(ValueError):
    """A source that cannot be read; the message names the path, line or query."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonlSource(_Strict):
    """One JSON object per line."""

    kind: ClassVar[str] = "jsonl"

    jsonl: str = Field(min_length=1, description="A path on the server, or a Files API id.")


class CsvSource(_Strict):
    """A CSV file whose header row gives each record's keys."""

    kind: ClassVar[str] = "csv"

    csv: str = Field(min_length=1, description="A path on the server, or a Files API id.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="One character.")


class DirectorySource(_Strict):
    """The files under a directory, one item each, in sorted relative-path order."""

    kind: ClassVar[str] = "directory"

    directory: str = Field(min_length=1, description="A directory on the server.")
    glob: str = Field("**/*", min_length=1, description="Which files, relative to it.")
    text: bool = Field(True, description="Put text files' contents (utf-8) in ``text``.")

    @field_validator("glob")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError(f"glob {value!r} must stay inside the directory (no / or ..)")
        return value


class SqlQuery(_Strict):
    url: str = Field(description="sqlite:///path.db (opened read-only) or postgresql://…")
    query: str = Field(min_length=1, description="A SELECT; each row is one item.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("url must start with sqlite:/// or postgresql://")
        return value


class SqlSource(_Strict):
    """The rows of a query, as dicts."""

    kind: ClassVar[str] = "sql"

    sql: SqlQuery


class ItemsSource(_Strict):
    """Items written in the pipeline itself; an item that is not an object becomes
    ``{"value": item}``."""

    kind: ClassVar[str] = "items"

    items: list[Any] = Field(description="The items, in order.")


Source = Annotated[
    Annotated[JsonlSource, Tag("jsonl")]
    | Annotated[CsvSource, Tag("csv")]
    | Annotated[DirectorySource, Tag("directory")]
    | Annotated[SqlSource, Tag("sql")]
    | Annotated[ItemsSource, Tag("items")],
    by_kind("a source", "jsonl", "csv", "directory", "sql", "items"),
]


async def read_items(
    source: Source, *, base: Path, open_file: OpenFile | None, skip: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """The records of ``source`` in order, the first ``skip`` left out."""
    async with closing(_records(source, base, open_file, skip)) as records:
        async for record in records:
            yield record


def _records(
    source: Source, base: Path, open_file: OpenFile | None, skip: int
) -> AsyncIterator[dict[str, Any]]:
    if isinstance(source, JsonlSource):
        return _jsonl(source.jsonl, base, open_file, skip)
    if isinstance(source, CsvSource):
        return _csv(source, base, open_file, skip)
    if isinstance(source, DirectorySource):
        return _directory(source, base, skip)
    if isinstance(source, SqlSource):
        return _sql(source.sql, base, skip)
    return _items(source.items, skip)


# -- bytes: a path or a Files API id, a chunk at a time ---------------------------------------


def is_file_id(ref: str) -> bool:
    """Whether ``ref`` names a Files API file rather than a path."""
    return _FILE_ID.fullmatch(ref) is not None


async def open_bytes(ref: str, *, base: Path, open_file: OpenFile | None) -> AsyncIterator[bytes]:
    """The bytes of a path (relative to ``base``) or of a Files API file, in chunks."""
    if is_file_id(ref):
        return await _open_file_id(ref, open_file)
    path = base / ref
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return _chunks(handle)


async def _open_file_id(file_id: str, open_file: OpenFile | None) -> AsyncIterator[bytes]:
    if open_file is None:
        raise SourceError(f"{file_id}: Files API ids cannot be read here (no file reader)")
    try:
        opened = open_file(file_id)
        return await opened if inspect.isawaitable(opened) else opened
    except GenspoolError as exc:
        raise SourceError(f"{file_id}: {exc.message}") from exc


@contextlib.asynccontextmanager
async def closing(chunks: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``chunks``, closed when the block ends (a generator's ``aclose``), so a reader that
    stops early releases its file or cursor now rather than when it is collected."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


# -- JSONL ------------------------------------------------------------------------------------


async def _jsonl(
    ref: str, base: Path, open_file: OpenFile | None, skip: int
) -> AsyncIterator[dict[str, Any]]:
    count = 0
    async with closing(await open_bytes(ref, base=base, open_file=open_file)) as chunks:
        async for number, line in _lines(chunks):
            if not line.strip():
                continue
            count += 1
            if count > skip:  # lines already registered are counted, never parsed again
                yield _json_object(line, number)


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of a byte stream, the trailing newline dropped."""
    rest, number = b"", 0
    async for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            yield number, line
    if rest:
        yield number + 1, rest


def _json_object(line: bytes, number: int) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"jsonl line {number}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SourceError(f"jsonl line {number}: not a JSON object")
    return value


# -- CSV --------------------------------------------------------------------------------------


class _NeedMore(Exception):
    """The csv reader reached the end of the lines read so far in the middle of a record."""


class _Feed:
    """The lines a csv reader pulls, fed as chunks arrive. A record that runs past them (a
    quoted field over a chunk's end) raises :class:`_NeedMore`; the lines it took are put back
    and parsed again once more have come, because a csv reader cannot resume a record."""

    def __init__(self) -> None:
        self.pending: deque[str] = deque()
        self.taken: list[str] = []
        self.line = 1  # the line the next record starts on

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self.pending:
            raise _NeedMore
        line = self.pending.popleft()
        self.taken.append(line)
        return line

    def rows(self, reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
        """(start line, fields) of every record complete in the lines fed so far."""
        while self.pending:
            self.taken.clear()
            try:
                row = next(reader)
            except _NeedMore:
                self.pending.extendleft(reversed(self.taken))
                return
            start, self.line = self.line, self.line + len(self.taken)
            yield start, row


async def _csv(
    source: CsvSource, base: Path, open_file: OpenFile | None, skip: int
) -> AsyncIterator[dict[str, Any]]:
    feed = _Feed()
    reader = csv.reader(feed, delimiter=source.delimiter, strict=True)
    header: list[str] | None = None
    count = 0
    async with closing(await open_bytes(source.csv, base=base, open_file=open_file)) as chunks:
        async for lines in _text_lines(chunks):
            feed.pending.extend(lines)
            for number, row in _checked_rows(feed, reader):
                if not row:
                    continue
                if header is None:
                    header = _header(row, number)
                    continue
                count += 1
                if count > skip:
                    yield _csv_record(header, row, number)
    if feed.pending:
        raise SourceError(f"csv line {feed.line}: unexpected end of file inside a quoted field")


def _checked_rows(feed: _Feed, reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    try:
        yield from feed.rows(reader)
    except csv.Error as exc:
        raise SourceError(f"csv line {feed.line}: {exc}") from None


async def _text_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The complete lines (ends kept, as csv wants them) of each chunk, decoded as UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    rest, offset = "", 0
    try:
        async for chunk in chunks:
            offset += len(chunk)
            lines = (rest + decoder.decode(chunk)).splitlines(keepends=True)
            rest = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
            yield lines
        tail = rest + decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise SourceError(f"csv: not UTF-8 text (before byte {offset}: {exc.reason})") from None
    if tail:
        yield [tail]


def _header(row: list[str], number: int) -> list[str]:
    names = [name.strip() for name in row]
    if "" in names:
        raise SourceError(f"csv line {number}: the header has an empty column name")
    if len(set(names)) != len(names):
        raise SourceError(f"csv line {number}: the header repeats a column name")
    return names


def _csv_record(header: list[str], row: list[str], number: int) -> dict[str, Any]:
    """A row as a dict; missing trailing fields are None, surplus ones an error."""
    if len(row) > len(header):
        raise SourceError(f"csv line {number}: {len(row)} fields, but the header has {len(header)}")
    return {name: row[i] if i < len(row) else None for i, name in enumerate(header)}


# -- a directory ------------------------------------------------------------------------------


async def _directory(
    source: DirectorySource, base: Path, skip: int
) -> AsyncIterator[dict[str, Any]]:
    root = (base / source.directory).resolve()
    paths = await asyncio.to_thread(_listing, root, source.glob)
    for path in paths[skip:]:
        yield await asyncio.to_thread(_describe, root, path, source.text)


def _listing(root: Path, pattern: str) -> list[Path]:
    """The files ``pattern`` finds under ``root``, sorted by relative path (stable across
    runs, whatever order the file system lists them in)."""
    if not root.is_dir():
        raise SourceError(f"{root}: no such directory")
    try:
        found = [p for p in root.glob(pattern) if p.is_file()]
    except (OSError, ValueError) as exc:
        raise SourceError(f"{root}: cannot list {pattern!r} ({exc})") from exc
    inside = [p for p in found if p.resolve().is_relative_to(root)]  # no symlink out
    return sorted(inside, key=lambda p: p.relative_to(root).as_posix())


def _describe(root: Path, path: Path, with_text: bool) -> dict[str, Any]:
    try:
        stat = path.stat()
        digest = _sha256(path)
        text = _text(path) if with_text and path.suffix.lower() in TEXT_SUFFIXES else None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    item: dict[str, Any] = {
        "path": str(path),
        "name": path.relative_to(root).as_posix(),
        "size": stat.st_size,
        "modified": stat.st_mtime,
        "sha256": digest,
        "media_type": media_type,
    }
    if text is not None:
        item["text"] = text
    return item


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


# -- SQL --------------------------------------------------------------------------------------


async def _sql(query: SqlQuery, base: Path, skip: int) -> AsyncIterator[dict[str, Any]]:
    count = 0
    try:
        if query.url.startswith("postgres"):
            rows = postgres_rows(query.url, query.query, SQL_ROWS)
        else:
            rows = sqlite_rows(sqlite_path(query.url, base), query.query, SQL_ROWS)
        async with closing(rows):
            async for chunk in rows:
                for row in chunk:
                    count += 1
                    if count > skip:
                        yield {key: jsonable(value) for key, value in row.items()}
    except SqlError as exc:
        raise SourceError(f"sql: {exc}") from exc


# -- inline items -----------------------------------------------------------------------------


async def _items(items: list[Any], skip: int) -> AsyncIterator[dict[str, Any]]:
    for item in items[skip:]:
        yield item if isinstance(item, dict) else {"value": item}
