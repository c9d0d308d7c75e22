"""The PostgreSQL side of pipelines: a query as a source (a server-side cursor, read-only) and a
table as a sink (upserts by key), on the shared server, in tables and a schema of the test's
own that it drops afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from genspool.pipelines import sources
from genspool.pipelines.sinks import SinkError, TableSink, open_sink
from genspool.pipelines.sources import SourceError, SqlSource, read_items
from tests.helpers.processes import SERVERS

URL = SERVERS["postgres"]


@pytest.fixture
async def pg() -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], str]]:
    """A connection and a fresh schema name; the schema is dropped with all in it."""
    try:
        conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":  # CI starts the server: its absence is a failure
            raise
        pytest.skip(f"no PostgreSQL at {URL}: {exc}")
    schema = f"gs_pipe_{uuid.uuid4().hex[:10]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield conn, schema
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def collect(source: SqlSource, skip: int = 0) -> list[dict[str, Any]]:
    return [r async for r in read_items(source, base=Path("/"), open_file=None, skip=skip)]


def query(sql: str, schema: str | None = None) -> SqlSource:
    url = f"{URL}?schema={schema}" if schema else URL
    return SqlSource.model_validate({"sql": {"url": url, "query": sql}})


async def test_postgres_source_streams_rows_through_a_server_side_cursor(
    pg: tuple[psycopg.AsyncConnection[Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, schema = pg
    monkeypatch.setattr(sources, "SQL_ROWS", 100)
    await conn.execute(
        f'CREATE TABLE "{schema}".reviews (id int PRIMARY KEY, text text, price numeric,'
        " at timestamptz, tags jsonb, raw bytea)"
    )
    await conn.execute(
        f"INSERT INTO \"{schema}\".reviews SELECT i, 'review ' || i, i * 1.5,"
        " '2025-01-02T03:04:05Z', jsonb_build_object('n', i), '\\x0001'"
        " FROM generate_series(0, 1233) AS i"
    )
    rows = await collect(query(f'SELECT * FROM "{schema}".reviews ORDER BY id'))
    assert len(rows) == 1234
    assert rows[3] == {
        "id": 3,
        "text": "review 3",
        "price": 4.5,
        "at": "2025-01-02T03:04:05+00:00",
        "tags": {"n": 3},
        "raw": "AAE=",
    }
    assert rows[2]["price"] == 3  # an integral numeric is an int
    resumed = await collect(query("SELECT id FROM reviews ORDER BY id", schema), skip=1230)
    assert resumed == [{"id": 1230}, {"id": 1231}, {"id": 1232}, {"id": 1233}]

    seen = []  # the cursor is server-side: the rows are fetched as the items are taken
    async for record in read_items(
        query(
            "SELECT id, (SELECT count(*) FROM pg_cursors WHERE name = 'genspool_source') AS c"
            " FROM reviews ORDER BY id LIMIT 3",
            schema,
        ),
        base=Path("/"),
        open_file=None,
    ):
        seen.append(record)
    assert [r["c"] for r in seen] == [1, 1, 1]


async def test_postgres_source_is_read_only_and_errors_are_named(
    pg: tuple[psycopg.AsyncConnection[Any], str],
) -> None:
    conn, schema = pg
    await conn.execute(f'CREATE TABLE "{schema}".t (id int)')
    await conn.execute(f'INSERT INTO "{schema}".t VALUES (1)')
    await conn.execute(f'CREATE SEQUENCE "{schema}".s')
    # A cursor takes only a SELECT; a function that writes is refused by the read-only mode.
    with pytest.raises(SourceError, match=r"nextval.* in a read-only transaction"):
        await collect(query("SELECT nextval('s')", schema))
    assert await collect(query("SELECT id FROM t", schema)) == [{"id": 1}]
    with pytest.raises(SourceError, match=r'sql: the query failed \(relation "nope"'):
        await collect(query("SELECT * FROM nope", schema))
    unreachable = "postgresql://postgres@127.0.0.1:1/test"
    with pytest.raises(SourceError, match="cannot connect to PostgreSQL"):
        await collect(SqlSource.model_validate({"sql": {"url": unreachable, "query": "SELECT 1"}}))


def item(seq: int, label: str | None) -> dict[str, Any]:
    steps = {"sentiment": {"text": label}} if label else {}
    status = "done" if label else "failed"
    return {"key": f"k{seq}", "seq": seq, "status": status, "item": {"id": seq},
            "steps": steps, "error": None}  # fmt: skip


async def write_table(sink: TableSink, chunks: list[list[dict[str, Any]]]) -> int:
    writer = open_sink(sink, base=Path("/"), run={})
    for chunk in chunks:
        await writer.write(chunk)
    return (await writer.close()).rows


async def test_postgres_table_sink_upserts_by_key(
    pg: tuple[psycopg.AsyncConnection[Any], str],
) -> None:
    conn, schema = pg
    table = f"{schema}.results_{uuid.uuid4().hex[:6]}"
    columns = {"label": "{{steps.sentiment.text}}", "item": "{{item}}"}
    sink = TableSink(table=table, url=URL, columns=columns)
    items = [item(0, "positive"), item(1, None), item(2, "negative")]
    assert await write_table(sink, [items[:2], items[2:]]) == 3
    assert await write_table(sink, [[item(0, "changed"), *items[1:]]]) == 3  # written twice
    cur = await conn.execute(f"SELECT * FROM {table} ORDER BY key")
    assert await cur.fetchall() == [
        ("k0", "changed", '{"id":0}'),
        ("k1", None, '{"id":1}'),
        ("k2", "negative", '{"id":2}'),
    ]
    unqualified = TableSink(table="by_id", url=f"{URL}?schema={schema}", key="id",
                            columns={"id": "{{item.id}}"})  # fmt: skip
    assert await write_table(unqualified, [items, items]) == 6
    cur = await conn.execute(f'SELECT id FROM "{schema}".by_id ORDER BY id')
    assert await cur.fetchall() == [("0",), ("1",), ("2",)]
    await conn.execute(f'CREATE TABLE "{schema}".narrow (key text PRIMARY KEY)')
    with pytest.raises(SinkError, match='column "label" of relation "narrow" does not exist'):
        await write_table(TableSink(table=f"{schema}.narrow", url=URL, columns=columns), [items])
