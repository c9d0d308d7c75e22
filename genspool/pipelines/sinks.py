"""Where a pipeline's results go: a JSONL or CSV file, a Markdown report, or rows in a table.

A sink is a config model whose one key names its kind. The runner opens one
:class:`SinkWriter` per sink and run (:func:`open_sink`), hands it the run's finished items in
source order, a chunk at a time (:meth:`SinkWriter.write`), and at the end takes its
:class:`SinkOutput` (:meth:`SinkWriter.close`): the bytes to store as a Files API file, or
nothing for a table. An item is ``{"key", "seq", "status", "item", "steps", "error"}``.

JSONL and CSV are spooled to a temporary file (in memory up to 8 MB, then on disk), so a large
run never holds its output as Python objects. A local copy is written beside its target and
then renamed over it (``os.replace``): a crash mid-write never leaves half a file, and a
finalize done again after a crash writes the same file again. A table sink upserts by key,
so writing the same items twice leaves one row each.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, Tag, field_validator, model_validator

from genspool.pipelines._kinds import by_kind
from genspool.pipelines._writers import SinkError, SinkOutput, SinkWriter, cell, render_fields

__all__ = [
    "CsvSink",
    "JsonlSink",
    "ReportSink",
    "Sink",
    "SinkError",
    "SinkOutput",
    "SinkWriter",
    "TableSink",
    "open_sink",
    "write_atomic",
]

#: Output kept in memory up to this size, then spooled to disk.
SPOOL_BYTES: Final = 8 * 1024 * 1024
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TABLE: Final = re.compile(rf"(?:{_IDENT.pattern}\.)?{_IDENT.pattern}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _flatten(data: Any, kind: str) -> Any:
    """``{jsonl: {path: x, fields: …}}`` (or ``{jsonl: {}}``) as ``{jsonl: x, fields: …}``."""
    if isinstance(data, dict) and isinstance(data.get(kind), dict):
        inner = dict(data[kind])
        return {**data, kind: inner.pop("path", None), **inner}
    return data


class JsonlSink(_Strict):
    """One JSON line per item: ``fields`` rendered for it, or the whole item."""

    kind: ClassVar[str] = "jsonl"
    jsonl: str | None = Field(None, description="A local path to write too (optional).")
    fields: dict[str, Any] | None = Field(
        None, description="A template object per item, e.g. {id: '{{item.id}}'}."
    )

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, data: Any) -> Any:
        return _flatten(data, "jsonl")


class CsvSink(_Strict):
    """One CSV row per item, a column per field; the header row first."""

    kind: ClassVar[str] = "csv"
    csv: str | None = Field(None, description="A local path to write too (optional).")
    fields: dict[str, str] = Field(
        min_length=1, description="Column name -> template, e.g. {label: '{{steps.x.text}}'}."
    )

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, data: Any) -> Any:
        return _flatten(data, "csv")


class ReportSink(_Strict):
    """A Markdown report: a Jinja2 template rendered once with ``items``, ``run``, ``counts``."""

    kind: ClassVar[str] = "report"
    report: str = Field(min_length=1, description="The template file.")
    path: str | None = Field(None, description="A local path to write the report to too.")


class TableSink(_Strict):
    """Rows upserted by key into a SQLite or PostgreSQL table (created with TEXT columns if
    absent)."""

    kind: ClassVar[str] = "table"
    table: str = Field(description="The table, optionally schema.table.")
    url: str = Field(description="sqlite:///path.db or postgresql://…")
    columns: dict[str, str] = Field(min_length=1, description="Column name -> template.")
    key: str = Field("key", description="The primary-key column; holds the item's key.")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.fullmatch(value):
            raise ValueError(f"table {value!r}: use letters, digits and _ (schema.table allowed)")
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _IDENT.fullmatch(name):
                raise ValueError(f"column {name!r}: use letters, digits and _")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _IDENT.fullmatch(value):
            raise ValueError(f"key column {value!r}: use letters, digits and _")
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("url must start with sqlite:/// or postgresql://")
        return value


Sink = Annotated[
    Annotated[JsonlSink, Tag("jsonl")]
    | Annotated[CsvSink, Tag("csv")]
    | Annotated[ReportSink, Tag("report")]
    | Annotated[TableSink, Tag("table")],
    by_kind("a sink", "jsonl", "csv", "report", "table"),
]


def open_sink(sink: Sink, *, base: Path, run: Mapping[str, Any]) -> SinkWriter:
    """A writer for ``sink``; relative paths are resolved against ``base``."""
    if isinstance(sink, JsonlSink):
        return _JsonlWriter(sink, _local(base, sink.jsonl))
    if isinstance(sink, CsvSink):
        return _CsvWriter(sink, _local(base, sink.csv))
    if isinstance(sink, ReportSink):
        return _ReportWriter(sink, base, run)
    from genspool.pipelines._table import TableWriter  # imports sinks: imported when used

    return TableWriter(sink, base)


def _local(base: Path, path: str | None) -> Path | None:
    return None if path is None else base / path


# -- rendering an item ------------------------------------------------------------------------


# -- files: spooled, then written atomically --------------------------------------------------


def write_atomic(target: Path, source: IO[bytes]) -> None:
    """Copy ``source`` to ``target`` through a temporary file beside it and a rename, so that
    ``target`` is always the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            source.seek(0)
            while chunk := source.read(1024 * 1024):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class _SpooledWriter(SinkWriter):
    """Output bytes spooled as they come; at close, the bytes and the local copy."""

    filename: ClassVar[str]
    media_type: ClassVar[str]

    def __init__(self, local: Path | None) -> None:
        self._local = local
        # Closed in close(); one dropped unclosed is closed (and deleted) when collected.
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self._closed = False

    def _append(self, data: bytes, rows: int) -> None:
        if self._closed:
            raise SinkError(f"{self.filename}: written after close")
        self._spool.write(data)
        self.rows += rows

    async def close(self) -> SinkOutput:
        self._closed = True
        try:
            if self._local is not None:
                await asyncio.to_thread(write_atomic, self._local, self._spool)
            self._spool.seek(0)
            data = self._spool.read()
        except OSError as exc:
            raise SinkError(f"{self._local}: cannot be written ({exc.strerror or exc})") from exc
        finally:
            self._spool.close()
        name = self._local.name if self._local is not None else self.filename
        return SinkOutput(data, name, self.media_type, self.rows, self._local)


class _JsonlWriter(_SpooledWriter):
    filename = "results.jsonl"
    media_type = "application/jsonl"

    def __init__(self, sink: JsonlSink, local: Path | None) -> None:
        super().__init__(local)
        self._fields = sink.fields

    async def write(self, items: Sequence[dict[str, Any]]) -> None:
        self._append(b"".join(self._line(item) for item in items), len(items))

    def _line(self, item: dict[str, Any]) -> bytes:
        record = item if self._fields is None else render_fields(self._fields, item)
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError as exc:
            raise SinkError(f"item {item.get('key')!r}: not JSON ({exc})") from None


class _CsvWriter(_SpooledWriter):
    filename = "results.csv"
    media_type = "text/csv"

    def __init__(self, sink: CsvSink, local: Path | None) -> None:
        super().__init__(local)
        self._fields = sink.fields
        self._append(_csv_rows([list(sink.fields)]), 0)

    async def write(self, items: Sequence[dict[str, Any]]) -> None:
        rows = (render_fields(self._fields, item).values() for item in items)
        self._append(_csv_rows([cell(v) for v in row] for row in rows), len(items))


def _csv_rows(rows: Iterator[list[str | None]] | list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    return text.getvalue().encode()


# -- a report ---------------------------------------------------------------------------------


class _ReportWriter(SinkWriter):
    """Items gathered (a report is about all of them), rendered once at close. The template
    is loaded when the sink is opened, so a missing or broken one fails the run up front."""

    media_type = "text/markdown"

    def __init__(self, sink: ReportSink, base: Path, run: Mapping[str, Any]) -> None:
        self._template = _template(base / sink.report, base)
        self._local = _local(base, sink.path)
        self._run = dict(run)
        self._items: list[dict[str, Any]] = []

    async def write(self, items: Sequence[dict[str, Any]]) -> None:
        self._items.extend(items)
        self.rows += len(items)

    async def close(self) -> SinkOutput:
        data = (await asyncio.to_thread(self._render)).encode()
        if self._local is not None:
            try:
                await asyncio.to_thread(write_atomic, self._local, io.BytesIO(data))
            except OSError as exc:
                raise SinkError(
                    f"{self._local}: cannot be written ({exc.strerror or exc})"
                ) from exc
        name = self._local.name if self._local is not None else _report_name(self._template)
        return SinkOutput(data, name, self.media_type, self.rows, self._local)

    def _render(self) -> str:
        counts = status_counts(self._items)
        try:
            text: str = self._template.render(items=self._items, run=self._run, counts=counts)
        except Exception as exc:  # UndefinedError, SecurityError, or the template's own error
            raise SinkError(f"report {self._template.name}: {type(exc).__name__}: {exc}") from exc
        return text


def _template(path: Path, base: Path) -> Any:
    """The Jinja2 template at ``path``, in a sandbox (a report template must not reach
    Python internals), where a missing value is an error rather than an empty string.
    Includes resolve against ``base`` (or, for a template outside it, its own directory)."""
    from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    inside = path.resolve().is_relative_to(base.resolve())
    root = base.resolve() if inside else path.resolve().parent
    env = SandboxedEnvironment(
        autoescape=False,
        undefined=StrictUndefined,
        loader=FileSystemLoader(root),
        keep_trailing_newline=True,
    )
    try:
        return env.get_template(path.resolve().relative_to(root).as_posix())
    except TemplateSyntaxError as exc:
        raise SinkError(f"report {path}, line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:
        raise SinkError(f"report {path}: no such template ({exc})") from None


def _report_name(template: Any) -> str:
    """``summary.md.j2`` -> ``summary.md``; ``summary.j2`` -> ``summary.md``."""
    name = Path(str(template.name)).name
    for suffix in (".j2", ".jinja", ".jinja2"):
        name = name.removesuffix(suffix)
    return name if name.endswith(".md") else f"{Path(name).stem}.md"


def status_counts(items: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{"total": n, "<status>": n, …}`` of ``items``."""
    counts = Counter(str(item.get("status")) for item in items)
    return {"total": len(items), **counts}
