"""Backup, verify and restore (genspool.ops.backup, ``genspool backup`` / ``restore``): a
SQLite deployment with jobs (succeeded, dead-lettered, queued, running), keys, a file, a
prompt and a vector store with chunks goes to one archive, is verified, and is restored onto
a fresh PostgreSQL schema on the shared server, where every record is present with equal
content and the restored instance serves it (results, the file's bytes, a vector search, the
prompt) and runs the jobs left waiting. Also: a non-empty target is refused without
``--force``, a corrupted member fails ``--verify`` by name, and a backup taken while jobs are
being submitted is consistent (its counts are those of one moment), a file in rollback-journal
mode backs up as one in WAL mode does, and the archive is a plain tar that GNU tar reads.
The must-show under load (a server, a batch and an ingest running) is test_backup_live.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from genspool.backends import open_storage
from genspool.cli import app
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.ops.backup import BackupError, backup, restore, verify
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, FAST_RETRY, MODELS, chat_body, make_keys
from tests.helpers.api import bearer as auth
from tests.helpers.processes import SERVERS, namespaced_url

EMBEDDER = {"name": "emb", "provider": "echo", "options": {"dimensions": 16}}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
DOC = "\n\n".join(f"Paragraph {i}: " + " ".join(f"w{i}x{n}" for n in range(40)) for i in range(8))
PG = SERVERS["postgres"]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh schema on the shared PostgreSQL server, dropped with all in it afterwards."""
    url = namespaced_url("postgres", Path("/"))
    schema = url.rsplit("=", 1)[1]
    try:
        conn = await psycopg.AsyncConnection.connect(PG, autocommit=True)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no PostgreSQL at {PG}: {exc}")
    try:
        yield url
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _wait_done(gs: InProcess, key: str, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            got = (await gs.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json()
            if got["status"] in ("succeeded", "failed"):
                return dict(got)
            await asyncio.sleep(0.02)


async def _deployment(url: str) -> dict[str, Any]:
    """Fill a SQLite deployment through the API; returns what the checks look for."""
    seen: dict[str, Any] = {}
    async with serve(
        [*MODELS, EMBEDDER], worker=True, url=url, retry=FAST_RETRY, key_cache_s=0.0
    ) as gs:
        keys = await make_keys(gs.services.keys)
        seen["key"] = keys.a
        h = auth(keys.a)
        ok = await gs.client.post(CHAT, json=chat_body("echo", "hello"), headers=h)
        assert ok.status_code in (200, 202), ok.text
        submitted = await gs.client.post(
            "/v1/jobs", json={"url": CHAT, "body": chat_body("echo", "kept")}, headers=h
        )
        seen["succeeded"] = (await _wait_done(gs, keys.a, submitted.json()["id"]))["id"]
        doomed = await gs.client.post(
            "/v1/jobs", json={"url": CHAT, "body": chat_body("doomed")}, headers=h
        )
        seen["dead"] = (await _wait_done(gs, keys.a, doomed.json()["id"]))["id"]
        up = await gs.client.post(
            "/v1/files", files={"file": ("doc.md", DOC.encode())},
            data={"purpose": "assistants"}, headers=h,
        )  # fmt: skip
        seen["file"] = up.json()["id"]
        store = await gs.client.post(
            "/v1/vector_stores", json={"name": "docs", "model": "emb"}, headers=h
        )
        seen["store"] = store.json()["id"]
        body = {"file_id": seen["file"], "chunking_strategy": STATIC}
        r = await gs.client.post(f"/v1/vector_stores/{seen['store']}/files", json=body, headers=h)
        assert r.status_code == 200, r.text
        async with asyncio.timeout(30):
            while True:
                got = await gs.client.get(
                    f"/v1/vector_stores/{seen['store']}/files/{seen['file']}", headers=h
                )
                if got.json()["status"] != "in_progress":
                    assert got.json()["status"] == "completed", got.text
                    break
                await asyncio.sleep(0.02)
        prompt = {
            "id": "greet",
            "kind": "text",
            "template": "Hello {{name}}",
            "labels": ["production"],
        }
        r = await gs.client.post("/v1/prompts", json=prompt, headers=auth(keys.a))
        assert r.status_code == 201, r.text
    # With no worker running: two jobs wait, and one is leased by a worker that then vanished.
    storage = open_storage(url)
    await storage.connect()
    try:
        queue = Queue(storage)
        waiting = await queue.submit_many(
            [Job(url=CHAT, model="echo", body=chat_body("echo", f"w{i}"), tenant="acme")
             for i in range(3)]
        )  # fmt: skip
        (leased,) = await queue.lease("echo", 1)
        seen["running"] = leased.id
        seen["waiting"] = [j.id for j in waiting]
    finally:
        await storage.close()
    return seen


def _tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each table of an archive as rows comparable across backends: no SQLite-only ``seq``,
    no blob location (each store has its own), JSON text parsed."""
    out: dict[str, list[dict[str, Any]]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if not m.name.startswith("tables/"):
                continue
            f = tar.extractfile(m)
            assert f is not None
            rows = []
            for line in f.read().splitlines():
                row = json.loads(line)
                row.pop("seq", None)
                row.pop("blob", None)
                for col in ("headings", "attributes"):
                    if isinstance(row.get(col), str):
                        row[col] = json.loads(row[col])
                if isinstance(row.get("active"), bool):
                    row["active"] = int(row["active"])
                rows.append(row)
            name = m.name[len("tables/") : -len(".jsonl")]
            out[name] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    return out


def _blobs(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {
            m.name: hashlib.sha256(f.read()).hexdigest()
            for m in tar.getmembers()
            if m.name.startswith("blobs/") and (f := tar.extractfile(m)) is not None
        }


async def test_sqlite_backup_restores_onto_postgres_with_every_record(
    tmp_path: Path, pg_url: str
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    seen = await _deployment(src)
    archive = tmp_path / "state.tar"
    made = await backup(src, archive)
    checked = verify(archive)
    assert checked.counts == made.counts and checked.blobs == made.blobs == 1
    for table in ("jobs", "kv", "files", "vector_stores", "vector_files", "chunks",
                  "prompt_versions", "prompt_labels", "prompt_audit"):  # fmt: skip
        assert made.counts[table] > 0, table
    assert made.counts["jobs"] == 7  # chat, kept, doomed, 3 waiting, 1 running
    assert seen["key"].split("_", 2)[2].encode() not in archive.read_bytes()  # hashes only

    await restore(archive, pg_url)
    again = tmp_path / "again.tar"
    await backup(pg_url, again)
    before, after = _tables(archive), _tables(again)
    for row in before["jobs"]:  # the one running job comes back queued, attempts kept
        if row["id"] == seen["running"]:
            assert row["status"] == "running" and row["attempts"] == 1
            row.update(status="queued", lease_token=None, lease_expires_at=None, worker=None)
    before["jobs"].sort(key=lambda r: json.dumps(r, sort_keys=True))
    assert {t: r for t, r in before.items() if r} == {t: r for t, r in after.items() if r}
    assert _blobs(archive) == _blobs(again)

    # The restored instance serves it all, and its worker runs the jobs left waiting.
    async with serve(
        [*MODELS, EMBEDDER], worker=True, url=pg_url, retry=FAST_RETRY, key_cache_s=0.0
    ) as gs:
        h = auth(seen["key"])
        done = (await gs.client.get(f"/v1/jobs/{seen['succeeded']}", headers=h)).json()
        assert done["status"] == "succeeded" and done["result"]
        dead = (await gs.client.get(f"/v1/jobs/{seen['dead']}", headers=h)).json()
        assert dead["status"] == "failed"
        content = await gs.client.get(f"/v1/files/{seen['file']}/content", headers=h)
        assert content.content == DOC.encode()
        found = await gs.client.post(
            f"/v1/vector_stores/{seen['store']}/search", json={"query": "Paragraph 3"}, headers=h
        )
        assert found.status_code == 200 and found.json()["data"], found.text
        prompt = await gs.client.get("/v1/prompts/greet", headers=h)
        assert prompt.status_code == 200, prompt.text
        for job_id in [*seen["waiting"], seen["running"]]:
            got = await _wait_done(gs, seen["key"], job_id)
            assert got["status"] == "succeeded", got
        rerun = (await gs.client.get(f"/v1/jobs/{seen['running']}", headers=h)).json()
        assert rerun["attempts"] == 2  # the lost lease's attempt is kept, one more ran it


async def test_a_non_empty_target_is_refused_unless_forced(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    await _deployment(src)
    archive = tmp_path / "state.tar"
    await backup(src, archive)
    with pytest.raises(BackupError, match="not empty; pass --force"):
        await restore(archive, src)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    await restore(archive, target)
    await restore(archive, target, force=True)  # replaces, does not duplicate
    again = tmp_path / "again.tar"
    assert (await backup(target, again)).counts == verify(archive).counts


async def test_a_corrupted_archive_fails_verify_naming_the_member(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    await _deployment(src)
    archive = tmp_path / "state.tar"
    await backup(src, archive)
    data = bytearray(archive.read_bytes())
    at = data.index(b'"status":"succeeded"')
    data[at + 11 : at + 20] = b"cancelled"
    archive.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"tables/jobs\.jsonl does not match its checksum"):
        verify(archive)
    result = CliRunner().invoke(app, ["backup", "--verify", str(archive)])
    assert result.exit_code != 0


def test_the_cli_writes_verifies_and_restores(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    asyncio.run(_deployment(src))
    archive = tmp_path / "state.tar"
    runner = CliRunner()
    wrote = runner.invoke(app, ["backup", str(archive), "--db", src])
    assert wrote.exit_code == 0 and "wrote" in wrote.output, wrote.output
    checked = runner.invoke(app, ["backup", "--verify", str(archive)])
    assert checked.exit_code == 0 and "7 jobs" in checked.output, checked.output
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    done = runner.invoke(app, ["restore", str(archive), "--db", target])
    assert done.exit_code == 0, done.output


async def test_a_backup_while_jobs_are_submitted_is_one_moment(tmp_path: Path) -> None:
    """Jobs go in from another task meanwhile; the archive's job count is a count the
    database had (between the counts before and after), and every member verifies."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    storage = open_storage(src)
    await storage.connect()
    queue = Queue(storage)
    stop = asyncio.Event()

    async def submit() -> None:
        while not stop.is_set():
            pair = [Job(url=CHAT, model="echo", body=chat_body("echo"), tenant="t") for _ in "ab"]
            await queue.submit_many(pair)
            await asyncio.sleep(0.001)

    try:
        await queue.submit_many(
            [Job(url=CHAT, model="echo", body=chat_body("echo"), tenant="t") for _ in range(500)]
        )
        task = asyncio.create_task(submit())
        await asyncio.sleep(0.05)
        async with asyncio.timeout(60):
            made = await backup(src, tmp_path / "live.tar")
        stop.set()
        await task
    finally:
        await storage.close()
    assert made.counts["jobs"] >= 500 and made.counts["jobs"] % 2 == 0  # pairs go in together
    assert verify(tmp_path / "live.tar").counts == made.counts


async def test_a_database_in_rollback_journal_mode_gives_the_same_archive(
    tmp_path: Path,
) -> None:
    """A SQLite file in rollback-journal mode (where a long reader would hold the writers off,
    so the backup copies it with the backup API first and reads the copy) gives the same
    members, byte for byte, as the same file in WAL mode (read in place, in one transaction),
    and is left in its mode."""
    db = tmp_path / "src.db"
    src = f"sqlite:///{db}"
    await _deployment(src)
    await backup(src, tmp_path / "wal.tar")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    await backup(src, tmp_path / "delete.tar")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left as it was

    def members(path: Path) -> dict[str, Any]:
        with tarfile.open(path) as tar:
            f = tar.extractfile("manifest.json")
            assert f is not None
            found: dict[str, Any] = json.load(f)["members"]
            return found

    assert members(tmp_path / "wal.tar") == members(tmp_path / "delete.tar")


def test_the_archive_is_a_plain_tar(tmp_path: Path) -> None:
    """Members are streamed in (their header written again with the size at the end): GNU tar
    lists each with the size the manifest's checksum covers, and extracts them intact."""
    src = f"sqlite:///{tmp_path / 'src.db'}"
    asyncio.run(_deployment(src))
    archive = tmp_path / "state.tar"
    asyncio.run(backup(src, archive))
    listed = subprocess.run(
        ["tar", "-tvf", str(archive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    with tarfile.open(archive) as tar:
        sizes = {m.name: m.size for m in tar.getmembers()}
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert {line.split()[-1]: int(line.split()[2]) for line in listed} == sizes
    assert set(sizes) == {*manifest["members"], "manifest.json"}
    assert sizes["tables/jobs.jsonl"] > 0 and any(n.startswith("blobs/") for n in sizes)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    for name, meta in manifest["members"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == meta["sha256"], name
