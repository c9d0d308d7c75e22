"""A database made before jobs had a history (SQLite at schema version 4, PostgreSQL at 3) is
brought up to date when a backend connects: its jobs read back with an empty history and no
worker, and go on working (replay, lease, a new attempt recorded)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import orjson
import psycopg
import pytest
from psycopg import sql

from genspool.backends._sql import migrations
from genspool.backends.postgres._pool import Q
from genspool.core.job import JobStatus
from genspool.core.queue import Queue
from tests.contract.test_backend_contract import RESULT
from tests.helpers.backends import kind_url, open_backend

OLD_COLUMNS = "id, tenant, url, model, body, status, attempts, max_attempts, created_at, "
OLD_COLUMNS += "available_at, finished_at, error"
ERROR = {"code": "model_error", "message": "boom (dead-lettered: 1 attempts used)"}


def old_row(job_id: str) -> tuple[object, ...]:
    now = time.time() - 60
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "old"}]})
    return (job_id, "default", "/v1/chat/completions", "m", body, "failed", 1, 1, now, now, now,
            orjson.dumps(ERROR))  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


@pytest.fixture(autouse=True)
def _drop_namespace() -> None:
    """Not the suite's: its probe would create the schema at the newest version up front (the
    test drops its namespace itself)."""


def _old_sqlite(url: str, job_id: str) -> None:
    db = sqlite3.connect(urlsplit(url).path[1:], isolation_level=None)
    try:
        for version, text in migrations("sqlite"):
            if version <= 4:
                for stmt in filter(str.strip, text.split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {version}")
        marks = ", ".join("?" * len(old_row(job_id)))
        db.execute(f"INSERT INTO jobs ({OLD_COLUMNS}) VALUES ({marks})", old_row(job_id))
    finally:
        db.close()


async def _old_postgres(url: str, job_id: str) -> None:
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    async with await psycopg.AsyncConnection.connect(
        parts._replace(query="").geturl(), autocommit=True
    ) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute(Q["schema_version"])
        for version, text in migrations("postgres"):
            if version <= 3:
                await conn.execute(text.encode())
                await conn.execute(Q["record_version"], {"version": version, "now": time.time()})
        marks = ", ".join(["%s"] * len(old_row(job_id)))
        await conn.execute(
            f"INSERT INTO jobs ({OLD_COLUMNS}) VALUES ({marks})".encode(), old_row(job_id)
        )


async def test_an_old_database_gains_the_history_columns(backend_url: str) -> None:
    job_id = "job_0000000000000000old01"
    if backend_url.startswith("sqlite"):
        _old_sqlite(backend_url, job_id)
    else:
        try:
            await _old_postgres(backend_url, job_id)
        except psycopg.OperationalError as exc:
            if os.environ.get("CI") == "true":  # CI starts the server: down is a failure
                raise
            pytest.skip(f"PostgreSQL unavailable: {exc}")
    queue = Queue(open_backend(backend_url))
    try:
        await queue.connect()
        old = await queue.get(job_id)
        assert (old.status, old.error, old.history, old.worker) == (
            JobStatus.FAILED, ERROR, [], None
        )  # fmt: skip
        await queue.replay(job_id)
        (leased,) = await queue.lease("m", 1, worker="w")
        await queue.complete([(leased, RESULT)])
        done = await queue.get(job_id)
        assert done.status is JobStatus.SUCCEEDED and done.error is None
        assert [(a["worker"], a["outcome"]) for a in done.history] == [("w", "succeeded")]
        await queue.close()
        again = Queue(open_backend(backend_url))  # a second connect migrates nothing more
        async with again:
            assert (await again.get(job_id)).history == done.history
    finally:
        await queue.storage.drop()
        await queue.close()
