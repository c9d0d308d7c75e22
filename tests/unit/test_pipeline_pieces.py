"""The pieces a pipeline run calls: sources, sinks, image steps, transforms and filters.

Real files under ``tmp_path``, real SQLite databases, the real Files service over the
in-memory backend, images drawn with Pillow in the test (no binary is committed). The
PostgreSQL source and table sink are in ``tests/integration/test_pipeline_sql.py``.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import sys
import textwrap
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image, ImageDraw
from pydantic import TypeAdapter, ValidationError

from genspool.backends import open_storage
from genspool.core.patterns import PatternError
from genspool.exceptions import ConfigError
from genspool.files import Files, open_files
from genspool.pipelines import sources
from genspool.pipelines.images import ImageError, ImageSpec, apply_ops, read_input, save_to
from genspool.pipelines.sinks import (
    CsvSink,
    JsonlSink,
    ReportSink,
    Sink,
    SinkError,
    TableSink,
    open_sink,
    write_atomic,
)
from genspool.pipelines.sources import (
    CsvSource,
    DirectorySource,
    ItemsSource,
    JsonlSource,
    Source,
    SourceError,
    SqlSource,
    read_items,
)
from genspool.pipelines.transforms import (
    FilterStep,
    TransformError,
    TransformStep,
    call,
    compile_filter,
    load,
)

SOURCE: TypeAdapter[Source] = TypeAdapter(Source)
SINK: TypeAdapter[Sink] = TypeAdapter(Sink)


async def collect(source: Source, base: Path, skip: int = 0, **kw: Any) -> list[dict[str, Any]]:
    return [
        r async for r in read_items(source, base=base, open_file=kw.get("open_file"), skip=skip)
    ]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- sources: JSONL ---------------------------------------------------------------------------


async def test_jsonl_in_order_blank_lines_skipped_and_resumed(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", '{"id": 1}\n\n{"id": 2}\r\n{"id": 3}\n{"id": 4}')
    source = SOURCE.validate_python({"jsonl": "in.jsonl"})
    assert [r["id"] for r in await collect(source, tmp_path)] == [1, 2, 3, 4]
    assert [r["id"] for r in await collect(source, tmp_path, skip=2)] == [3, 4]
    assert await collect(source, tmp_path, skip=9) == []


async def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", '{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(SourceError, match=r"^jsonl line 3: not a JSON object$"):
        await collect(JsonlSource(jsonl="a.jsonl"), tmp_path)
    write(tmp_path / "b.jsonl", '{"id": 1}\n{"id": \n')
    with pytest.raises(SourceError, match=r"^jsonl line 2: invalid JSON"):
        await collect(JsonlSource(jsonl="b.jsonl"), tmp_path)
    with pytest.raises(SourceError, match=r"nope\.jsonl: no such file"):
        await collect(JsonlSource(jsonl="nope.jsonl"), tmp_path)


async def test_a_20_mb_jsonl_is_streamed_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = orjson.dumps({"id": 0, "text": "x" * 1000}) + b"\n"
    with path.open("wb") as out:
        for _ in range(20 * 1024 * 1024 // len(line) + 1):
            out.write(line)
    assert path.stat().st_size > 20 * 1024 * 1024
    count = 0
    tracemalloc.start()
    try:
        async for record in read_items(JsonlSource(jsonl=str(path)), base=tmp_path, open_file=None):
            count += len(record["text"]) == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == path.stat().st_size // len(line)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    name = f"gs{uuid.uuid4().hex[:10]}"
    store = open_storage(f"memory://{name}").files
    assert store is not None
    service = open_files(store, max_bytes=1 << 20)
    await service.connect()
    yield service
    await service.close()


def reader(files: Files, tenant: str) -> sources.OpenFile:
    async def open_file(file_id: str) -> AsyncIterator[bytes]:
        _, chunks = await files.content(file_id, tenant)
        return chunks

    return open_file


async def upload(files: Files, data: bytes, tenant: str = "acme") -> str:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    record = await files.create(chunks(), tenant=tenant, filename="in", purpose="user_data")
    return record.id


async def test_a_files_api_id_is_read_through_the_tenants_reader(
    files: Files, tmp_path: Path
) -> None:
    file_id = await upload(files, b'{"id": "a"}\n{"id": "b"}\n')
    found = await collect(JsonlSource(jsonl=file_id), tmp_path, open_file=reader(files, "acme"))
    assert [r["id"] for r in found] == ["a", "b"]
    csv_id = await upload(files, b"id,n\nx,1\n")
    rows = await collect(CsvSource(csv=csv_id), tmp_path, open_file=reader(files, "acme"))
    assert rows == [{"id": "x", "n": "1"}]
    with pytest.raises(SourceError, match=f"{file_id}: no file"):  # another tenant's file
        await collect(JsonlSource(jsonl=file_id), tmp_path, open_file=reader(files, "other"))
    with pytest.raises(SourceError, match="file-0ff: no file"):
        await collect(JsonlSource(jsonl="file-0ff"), tmp_path, open_file=reader(files, "acme"))
    with pytest.raises(SourceError, match="no file reader"):
        await collect(JsonlSource(jsonl=file_id), tmp_path)


# -- sources: CSV -----------------------------------------------------------------------------

CSV_TEXT = (
    "\ufeffid;text;n\r\n"
    'a;"semi;colon";1\r\n'
    "\r\n"
    'b;"two\nlines, and ""quotes""";2\r\n'
    "c;short\r\n"
    "d;last;4"
)


@pytest.mark.parametrize("chunk", [3, 7, 64 * 1024])
async def test_csv_records_survive_any_chunking(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)  # quoted fields across chunk ends
    write(tmp_path / "in.csv", CSV_TEXT)
    source = CsvSource(csv="in.csv", delimiter=";")
    assert await collect(source, tmp_path) == [
        {"id": "a", "text": "semi;colon", "n": "1"},
        {"id": "b", "text": 'two\nlines, and "quotes"', "n": "2"},
        {"id": "c", "text": "short", "n": None},
        {"id": "d", "text": "last", "n": "4"},
    ]
    assert [r["id"] for r in await collect(source, tmp_path, skip=3)] == ["d"]


async def test_csv_errors_name_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 5)
    write(tmp_path / "wide.csv", 'id,n\n1,"a\nb"\n2,3,4\n')
    with pytest.raises(SourceError, match=r"^csv line 4: 3 fields, but the header has 2$"):
        await collect(CsvSource(csv="wide.csv"), tmp_path)
    write(tmp_path / "open.csv", 'id,n\n1,"never closed\n2,3\n')
    with pytest.raises(SourceError, match=r"^csv line 2: unexpected end of file inside a quoted"):
        await collect(CsvSource(csv="open.csv"), tmp_path)
    write(tmp_path / "latin.csv", "id\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        await collect(CsvSource(csv="latin.csv"), tmp_path)
    write(tmp_path / "dup.csv", "id,id\n1,2\n")
    with pytest.raises(SourceError, match="line 1: the header repeats"):
        await collect(CsvSource(csv="dup.csv"), tmp_path)


# -- sources: a directory ---------------------------------------------------------------------


async def test_directory_items_in_sorted_order_with_metadata(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for name in ["b.txt", "a/z.md", "a/b.png", "c.bin", "A.json"]:
        write(root / name, f"content of {name} \xe9")
    write(root / "bad.txt", b"\xff\xfeok")
    os.utime(root / "b.txt", (1_700_000_000, 1_700_000_000))
    items = await collect(DirectorySource(directory="docs"), tmp_path)
    assert [i["name"] for i in items] == [
        "A.json",
        "a/b.png",
        "a/z.md",
        "b.txt",
        "bad.txt",
        "c.bin",
    ]
    by_name = {i["name"]: i for i in items}
    txt = by_name["b.txt"]
    assert txt["path"] == str(root / "b.txt")
    assert txt["size"] == len("content of b.txt \xe9".encode())
    assert txt["modified"] == 1_700_000_000
    assert txt["media_type"] == "text/plain"
    assert txt["text"] == "content of b.txt \xe9"
    assert len(txt["sha256"]) == 64
    assert "text" not in by_name["a/b.png"] and by_name["a/b.png"]["media_type"] == "image/png"
    assert by_name["c.bin"]["media_type"] == "application/octet-stream"
    assert by_name["bad.txt"]["text"] == "\ufffd\ufffdok"  # errors replaced
    resumed = await collect(DirectorySource(directory=str(root), glob="**/*.txt"), tmp_path, 1)
    assert [i["name"] for i in resumed] == ["bad.txt"]
    plain = await collect(DirectorySource(directory="docs", glob="*.json", text=False), tmp_path)
    assert [("text" in i, i["name"]) for i in plain] == [(False, "A.json")]
    with pytest.raises(SourceError, match="no such directory"):
        await collect(DirectorySource(directory="missing"), tmp_path)
    with pytest.raises(ValidationError, match="must stay inside the directory"):
        DirectorySource(directory="docs", glob="../*")


# -- sources: SQLite, inline items, configs ---------------------------------------------------


def sqlite_db(path: Path, rows: int) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, text TEXT, score REAL, raw BLOB)")
        db.executemany(
            "INSERT INTO reviews VALUES (?, ?, ?, ?)",
            [(i, f"review {i}", i / 2, b"\x00\x01") for i in range(rows)],
        )
    db.close()
    return path


async def test_sqlite_rows_in_chunks_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "SQL_ROWS", 7)
    sqlite_db(tmp_path / "r.db", 50)
    query = {"url": "sqlite:///r.db", "query": "SELECT * FROM reviews ORDER BY id"}
    rows = await collect(SqlSource.model_validate({"sql": query}), tmp_path)
    assert len(rows) == 50
    assert rows[3] == {"id": 3, "text": "review 3", "score": 1.5, "raw": "AAE="}
    absolute = {**query, "url": f"sqlite:///{tmp_path}/r.db"}
    resumed = await collect(SqlSource.model_validate({"sql": absolute}), tmp_path, skip=45)
    assert [r["id"] for r in resumed] == [45, 46, 47, 48, 49]
    delete = SqlSource.model_validate({"sql": {**query, "query": "DELETE FROM reviews"}})
    with pytest.raises(SourceError, match="readonly"):
        await collect(delete, tmp_path)
    assert len(await collect(SqlSource.model_validate({"sql": query}), tmp_path)) == 50
    bad = SqlSource.model_validate({"sql": {**query, "query": "SELECT nope FROM reviews"}})
    with pytest.raises(SourceError, match="no such column: nope"):
        await collect(bad, tmp_path)
    missing = SqlSource.model_validate({"sql": {**query, "url": "sqlite:///gone.db"}})
    with pytest.raises(SourceError, match="no SQLite database"):
        await collect(missing, tmp_path)


async def test_inline_items_wrap_scalars(tmp_path: Path) -> None:
    source = SOURCE.validate_python({"items": [{"id": 1}, "two", [3]]})
    assert isinstance(source, ItemsSource)
    assert await collect(source, tmp_path) == [{"id": 1}, {"value": "two"}, {"value": [3]}]
    assert await collect(source, tmp_path, skip=2) == [{"value": [3]}]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sql": {"url": "mysql://x", "query": "SELECT 1"}}, "sqlite:/// or postgresql://"),
        ({"csv": "a.csv", "delimiter": ";;"}, "at most 1 character"),
        ({"jsonl": "a.jsonl", "glob": "*"}, "Extra inputs are not permitted"),
        ({"jsonl": "a.jsonl", "csv": "a.csv"}, "a source names exactly one of: jsonl, csv"),
    ],
)
def test_source_configs_are_checked(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SOURCE.validate_python(config)


# -- sinks ------------------------------------------------------------------------------------


def item(seq: int, status: str = "done", **steps: Any) -> dict[str, Any]:
    return {
        "key": f"k{seq}",
        "seq": seq,
        "status": status,
        "item": {"id": seq, "text": f"text {seq}"},
        "steps": steps,
        "error": None if status != "failed" else "boom",
    }


ITEMS = [
    item(0, sentiment={"text": "positive"}),
    item(1, "failed"),
    item(2, sentiment={"text": "negative", "score": 0.25}),
]


async def run_sink(sink: Sink, base: Path, chunks: Sequence[Sequence[dict[str, Any]]]) -> Any:
    writer = open_sink(sink, base=base, run={"id": "run_1", "pipeline": "reviews"})
    for chunk in chunks:
        await writer.write(chunk)
    return await writer.close()


async def test_jsonl_sink_whole_items_or_fields(tmp_path: Path) -> None:
    out = await run_sink(SINK.validate_python({"jsonl": {}}), tmp_path, [ITEMS[:2], ITEMS[2:]])
    assert [orjson.loads(x) for x in out.data.splitlines()] == ITEMS
    assert (out.filename, out.media_type, out.rows, out.path) == (
        "results.jsonl", "application/jsonl", 3, None,
    )  # fmt: skip
    fields = {"id": "{{item.id}}", "label": "{{steps.sentiment.text}}", "k": "key {{key}}"}
    sink = SINK.validate_python({"jsonl": "out/r.jsonl", "fields": fields})
    out = await run_sink(sink, tmp_path, [ITEMS])
    lines = [orjson.loads(x) for x in out.data.splitlines()]
    assert lines == [
        {"id": 0, "label": "positive", "k": "key k0"},
        {"id": 1, "label": None, "k": "key k1"},  # a failed item has no step output
        {"id": 2, "label": "negative", "k": "key k2"},
    ]
    assert (tmp_path / "out/r.jsonl").read_bytes() == out.data and out.filename == "r.jsonl"
    typo = JsonlSink(fields={"label": "{{steps.sentimnet.text}}"})
    with pytest.raises(SinkError, match=r"item 'k0', field 'label'.*sentimnet"):
        await run_sink(typo, tmp_path, [ITEMS])


async def test_csv_sink(tmp_path: Path) -> None:
    sink = CsvSink(csv="r.csv", fields={"id": "{{item.id}}", "out": "{{steps.sentiment}}"})
    out = await run_sink(sink, tmp_path, [ITEMS[:1], [], ITEMS[1:]])
    assert out.data.decode().splitlines() == [
        "id,out",
        '0,"{""text"":""positive""}"',
        "1,",
        '2,"{""text"":""negative"",""score"":0.25}"',
    ]
    assert (tmp_path / "r.csv").read_bytes() == out.data
    assert (out.rows, out.media_type) == (3, "text/csv")


async def test_local_files_are_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "r.jsonl"
    target.write_text("the previous run's file\n")

    class BrokenSpool(io.BytesIO):
        """A fake spool whose second read fails, as a disk error mid-copy would."""

        reads = 0

        def read(self, size: int | None = -1) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise OSError("disk gone")
            return super().read(3)

    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, BrokenSpool(b"new content"))
    assert target.read_text() == "the previous run's file\n"
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]  # no temp file left
    for _ in range(2):  # a finalize done again writes the same whole file
        out = await run_sink(JsonlSink(jsonl=str(target)), tmp_path, [ITEMS])
        assert target.read_bytes() == out.data
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl"]


REPORT = """\
# {{ run.pipeline }} ({{ run.id }})

{{ counts.total }} items, {{ counts.done }} done, {{ counts.failed }} failed.
{% for i in items %}
- {{ i.key }}: {{ i.steps.sentiment.text if i.status == "done" else "error: " ~ i.error }}
{%- endfor %}
{% include "footer.md" %}
"""


async def test_report_sink_renders_markdown(tmp_path: Path) -> None:
    write(tmp_path / "tpl/summary.md.j2", REPORT)
    write(tmp_path / "footer.md", "-- genspool")
    sink = SINK.validate_python({"report": "tpl/summary.md.j2", "path": "out/summary.md"})
    out = await run_sink(sink, tmp_path, [ITEMS[:2], ITEMS[2:]])
    assert out.data.decode() == textwrap.dedent("""\
        # reviews (run_1)

        3 items, 2 done, 1 failed.

        - k0: positive
        - k1: error: boom
        - k2: negative
        -- genspool
        """)
    assert (tmp_path / "out/summary.md").read_bytes() == out.data
    assert (out.filename, out.media_type, out.rows) == ("summary.md", "text/markdown", 3)
    no_path = await run_sink(
        ReportSink(report=str(tmp_path / "tpl/summary.md.j2")), tmp_path, [ITEMS]
    )
    assert no_path.filename == "summary.md" and no_path.path is None


async def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="no such template"):
        open_sink(ReportSink(report="missing.j2"), base=tmp_path, run={})
    write(tmp_path / "broken.j2", "line one\n{% for x in %}\n")
    with pytest.raises(SinkError, match=r"broken\.j2, line 2"):
        open_sink(ReportSink(report="broken.j2"), base=tmp_path, run={})
    write(tmp_path / "typo.j2", "{{ run.nme }}")
    with pytest.raises(SinkError, match=r"UndefinedError.*nme"):
        await run_sink(ReportSink(report="typo.j2"), tmp_path, [ITEMS])
    write(tmp_path / "escape.j2", "{{ items.__class__.__mro__ }}")  # the sandbox refuses
    with pytest.raises(SinkError, match=r"escape\.j2: SecurityError: access to attribute"):
        await run_sink(ReportSink(report="escape.j2"), tmp_path, [ITEMS])


def table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    db.close()
    return rows


async def test_table_sink_upserts_by_key_in_sqlite(tmp_path: Path) -> None:
    table = f"results_{uuid.uuid4().hex[:8]}"
    columns = {"label": "{{steps.sentiment.text}}", "item": "{{item}}"}
    sink = TableSink(table=table, url="sqlite:///r.db", columns=columns)
    out = await run_sink(sink, tmp_path, [ITEMS[:2], ITEMS[2:]])
    assert (out.data, out.filename, out.rows) == (None, table, 3)
    again = [{**ITEMS[0], "steps": {"sentiment": {"text": "changed"}}}, *ITEMS]
    await run_sink(sink, tmp_path, [again])  # written twice: still one row each
    assert table_rows(tmp_path / "r.db", table) == [
        ("k0", "positive", '{"id":0,"text":"text 0"}'),
        ("k1", None, '{"id":1,"text":"text 1"}'),
        ("k2", "negative", '{"id":2,"text":"text 2"}'),
    ]
    by_id = TableSink(table="by_id", url=f"sqlite:///{tmp_path}/r.db", key="id",
                      columns={"id": "{{item.id}}", "text": "{{item.text}}"})  # fmt: skip
    await run_sink(by_id, tmp_path, [ITEMS, ITEMS])
    assert table_rows(tmp_path / "r.db", "by_id")[0] == ("0", "text 0")
    empty = TableSink(table="empty", url="sqlite:///r.db", columns={"x": "{{key}}"})
    assert (await run_sink(empty, tmp_path, [])).rows == 0
    assert table_rows(tmp_path / "r.db", "empty") == []  # created all the same
    with pytest.raises(SinkError, match="no directory"):
        await run_sink(
            TableSink(table="t", url="sqlite:///no/r.db", columns=columns), tmp_path, [ITEMS]
        )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"table": "a;drop", "url": "sqlite:///r.db", "columns": {"x": "1"}}, "table 'a;drop'"),
        ({"table": "t", "url": "sqlite:///r.db", "columns": {"x y": "1"}}, "column 'x y'"),
        ({"table": "t", "url": "redis://x", "columns": {"x": "1"}}, "sqlite:///"),
        ({"csv": "r.csv"}, "fields"),
        ({"report": "r.j2", "fields": {}}, "Extra inputs"),
        ({"parquet": "r.parquet"}, "a sink names exactly one of: jsonl, csv, report, table"),
    ],
)
def test_sink_configs_are_checked(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SINK.validate_python(config)


# -- images -----------------------------------------------------------------------------------


def png(size: tuple[int, int] = (64, 32), mode: str = "RGB", **save: Any) -> bytes:
    image = Image.new(mode, size)
    draw = ImageDraw.Draw(image)
    for x in range(size[0]):
        shade = 100 + x * 50 // size[0]
        draw.line([(x, 0), (x, size[1])], fill=(shade, shade, shade, 255)[: len(mode)])
    out = io.BytesIO()
    image.save(out, format=save.pop("format", "PNG"), **save)
    return out.getvalue()


def ops(*entries: dict[str, Any]) -> Any:
    return ImageSpec.model_validate({"input": "x.png", "ops": list(entries)}).ops


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("resize", "size"),
    [
        ({"width": 16, "height": 16}, (16, 8)),  # contain: inside the box
        ({"width": 16, "height": 16, "fit": "cover"}, (16, 16)),
        ({"width": 10, "height": 20, "fit": "exact"}, (10, 20)),
        ({"width": 32}, (32, 16)),
        ({"height": 8, "fit": "cover"}, (16, 8)),
    ],
)
def test_resize(resize: dict[str, Any], size: tuple[int, int]) -> None:
    out = apply_ops(png(), ops({"resize": resize}))
    assert (out.width, out.height) == size == decoded(out.data).size
    assert (out.format, out.media_type) == ("png", "image/png")


def test_denoise_removes_a_speck() -> None:
    image = Image.new("L", (9, 9), 50)
    image.putpixel((4, 4), 255)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    out = decoded(apply_ops(buf.getvalue(), ops({"denoise": {"size": 3}})).data)
    assert out.getpixel((4, 4)) == 50


def test_sharpen_and_autocontrast() -> None:
    flat = png()
    sharpened = decoded(apply_ops(flat, ops({"sharpen": {}})).data)
    assert sharpened.size == (64, 32)
    stretched = decoded(apply_ops(flat, ops({"autocontrast": {}})).data).convert("L")
    assert decoded(flat).convert("L").getextrema() == (100, 149)
    assert stretched.getextrema() == (0, 255)
    alpha = decoded(apply_ops(png(mode="RGBA"), ops({"autocontrast": {"cutoff": 1}})).data)
    assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (255, 255)


def test_grayscale_and_convert() -> None:
    gray = apply_ops(png(), ops({"grayscale": {}}))
    assert decoded(gray.data).mode == "L"
    jpeg = apply_ops(png(mode="RGBA"), ops({"convert": {"format": "jpeg", "quality": 60}}))
    assert (jpeg.format, jpeg.media_type, decoded(jpeg.data).mode) == ("jpeg", "image/jpeg", "RGB")
    webp = apply_ops(png(), ops({"resize": {"width": 8}}, {"convert": {"format": "webp"}}))
    assert (webp.format, webp.media_type, decoded(webp.data).format) == (
        "webp",
        "image/webp",
        "WEBP",
    )
    kept = apply_ops(png(format="JPEG"), ops({"sharpen": {"radius": 1}}))
    assert kept.format == "jpeg"  # no convert: the input's format


def test_exif_orientation_is_applied_first() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    photo = png(size=(40, 20), format="JPEG", exif=exif.tobytes())
    out = apply_ops(photo, ops({"resize": {"width": 10}}))
    assert (out.width, out.height) == (10, 20)


def test_bad_images() -> None:
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        apply_ops(b"hello, not an image", ops({"grayscale": {}}))
    with pytest.raises(ImageError, match="png image is truncated or corrupt"):
        apply_ops(png()[:60], ops({"grayscale": {}}))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"blur": {"radius": 2}}, "an image op names exactly one of: resize, denoise"),
        ({"resize": {}}, "resize needs a width, a height or both"),
        ({"denoise": {"size": 4}}, "must be odd"),
        ({"convert": {"format": "bmp"}}, "'png', 'jpeg' or 'webp'"),
        ({"sharpen": {"radius": 2, "amount": 1}}, "Extra inputs"),
    ],
)
def test_image_op_configs_are_checked(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ops(entry)


async def test_image_input_and_output_files(files: Files, tmp_path: Path) -> None:
    data = png()
    write(tmp_path / "in/photo.png", data)
    assert await read_input("in/photo.png", base=tmp_path, open_file=None) == data
    file_id = await upload(files, data)
    assert await read_input(file_id, base=tmp_path, open_file=reader(files, "acme")) == data
    with pytest.raises(ImageError, match="over the 100-byte limit"):
        await read_input("in/photo.png", base=tmp_path, open_file=None, max_bytes=100)
    with pytest.raises(ImageError, match="no such file"):
        await read_input("in/gone.png", base=tmp_path, open_file=None)
    out = apply_ops(data, ops({"convert": {"format": "jpeg"}}))
    written = save_to(tmp_path / "out", "photo.png", out)
    assert written == tmp_path / "out/photo.jpg" and written.read_bytes() == out.data


# -- transforms and filters -------------------------------------------------------------------

TRANSFORMS = """\
import asyncio
import threading

IMPORTS = []
IMPORTS.append(1)
NOT_A_FUNCTION = 3

def shout(context):
    return {"text": context["item"]["text"].upper(), "thread": threading.get_ident()}

async def later(context):
    await asyncio.sleep(0)
    return (context["key"], 1.5)

def opaque(context):
    return {"when": object()}

def fails(context):
    raise KeyError("text")

class Tools:
    @staticmethod
    def count(context):
        return len(context["item"])
"""


@pytest.fixture
def transforms_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_transforms_{uuid.uuid4().hex[:8]}"
    write(tmp_path / f"{name}.py", TRANSFORMS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_transforms_sync_in_a_thread_and_async(transforms_module: str) -> None:
    context = {"key": "k1", "item": {"text": "hello"}}
    shout = load(f"{transforms_module}:shout")
    assert load(f"{transforms_module}:shout") is shout  # imported once
    assert sys.modules[transforms_module].IMPORTS == [1]
    result = await call(shout, context)
    assert result["text"] == "HELLO" and result["thread"] != threading.get_ident()
    assert await call(load(f"{transforms_module}:later"), context) == ["k1", 1.5]
    assert await call(load(f"{transforms_module}:Tools.count"), context) == 1


async def test_transform_errors_name_the_function(transforms_module: str) -> None:
    with pytest.raises(TransformError, match=f"{transforms_module}:opaque returned dict"):
        await call(load(f"{transforms_module}:opaque"), {})
    with pytest.raises(TransformError, match=f"{transforms_module}:fails raised KeyError"):
        await call(load(f"{transforms_module}:fails"), {})
    with pytest.raises(ConfigError, match="'no_such_module_x:f': cannot import no_such_module_x"):
        load("no_such_module_x:f")
    with pytest.raises(ConfigError, match=f"{transforms_module} has no missing"):
        load(f"{transforms_module}:missing")
    with pytest.raises(ConfigError, match="NOT_A_FUNCTION is not a function"):
        load(f"{transforms_module}:NOT_A_FUNCTION")
    with pytest.raises(ValidationError, match="should match pattern"):
        TransformStep(transform="not a ref")


def test_filters_match_the_item_context() -> None:
    keep = compile_filter(
        FilterStep(
            filter={"item": {"lang": ["en"]}, "steps": {"s": {"score": [{"numeric": [">", 0.5]}]}}}
        )
    )
    assert keep({"item": {"lang": "en"}, "steps": {"s": {"score": 0.9}}})
    assert not keep({"item": {"lang": "fr"}, "steps": {"s": {"score": 0.9}}})
    assert not keep({"item": {"lang": "en"}, "steps": {"s": {"score": 0.1}}})
    assert compile_filter({"key": [{"prefix": "k"}]})({"key": "k1"})
    with pytest.raises(PatternError, match=r"^item\.lang\[0\]\.prefx: unknown operator"):
        compile_filter({"item": {"lang": [{"prefx": "e"}]}})
    with pytest.raises(ValidationError, match=r"item\.lang: must be an array"):
        FilterStep(filter={"item": {"lang": "en"}})


async def test_sources_cooperate_with_the_event_loop(tmp_path: Path) -> None:
    """Reading runs in threads: another task keeps running while a large file is read."""
    write(tmp_path / "in.jsonl", b'{"id": 1}\n' * 200_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    assert len(await collect(JsonlSource(jsonl="in.jsonl"), tmp_path)) == 200_000
    task.cancel()
    assert ticks > 5
