"""One archive of a deployment's state, checked and restored into any SQL backend.

The archive is a tar: ``manifest.json`` (format, schema version, source kind, and per member
its row count and sha256), one ``tables/<name>.jsonl`` per record table, and
``blobs/<tenant>/<file id>`` per stored file. Rows are copied table by table rather than
through the storage roles: the SQLite and PostgreSQL schemas carry the same tables and
columns, so a row-level copy covers every record kind (jobs with results and history, keys,
files, batches, pipelines, webhooks, prompts, vectors, drift samples) with no per-role
export code, and restores bit for bit. Consistency while the service runs: SQLite is first
copied with the sqlite3 backup API; PostgreSQL is read in one REPEATABLE READ transaction.
Leases, slots and rate-limit state are not kept: a restored job that was running comes
back queued with its attempts, so a restored instance carries on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genspool.backends import backend_from_url, shown_url
from genspool.exceptions import GenspoolError
from genspool.files.blobs import CHUNK_BYTES, BlobStore, blob_key, blob_store_from_url

__all__ = ["RECORD_TABLES", "BackupError", "Manifest", "backup", "restore", "verify"]

FORMAT = "genspool-backup/1"
#: Rows fetched, and inserted, per round trip.
BATCH = 2000

#: The tables that hold records, in an order that restores parents before children.
#: Left out on purpose: ``slots`` and ``limits`` (live coordination), ``routes_revision``
#: (derived), ``events`` (PostgreSQL's relay), ``blob_chunks`` (blobs go as their own members).
RECORD_TABLES = (
    "jobs", "kv", "routes", "files", "batches", "webhooks", "runs", "run_items", "ticks",
    "vector_stores", "vector_files", "chunks", "chunk_heads", "chunk_revisions",
    "embedding_cache", "prompt_versions", "prompt_labels", "prompt_audit", "drift_samples",
)  # fmt: skip


class BackupError(GenspoolError):
    """A backup, verify or restore that cannot go on; the message is one line."""


@dataclass(frozen=True)
class Manifest:
    """What :func:`verify` found: the source, and rows per table and blobs written."""

    source: str
    schema_version: int
    counts: dict[str, int]
    blobs: int


# -- values ----------------------------------------------------------------------------------


def _enc(value: Any) -> Any:
    """JSON for a column value; bytes as ``{"$b": base64}`` so they come back as bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict | list):  # a PostgreSQL jsonb column: SQLite keeps JSON text
        return json.dumps(value, separators=(",", ":"))
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict) and "$b" in value:
        return base64.b64decode(value["$b"])
    return value


# -- reading the source ----------------------------------------------------------------------


def _kind(url: str) -> str:
    scheme = url.partition("://")[0].split("+", 1)[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise BackupError(f"{shown_url(url)}: backup and restore need a sqlite:// or postgresql:// URL")


def _sqlite_rows(db: sqlite3.Connection) -> Iterator[tuple[str, list[str], Iterator[Any]]]:
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in RECORD_TABLES:
        if table in have:
            cur = db.execute(f"SELECT * FROM {table}")
            yield table, [d[0] for d in cur.description], iter(cur)


def _schema_version_sqlite(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


class _Spool:
    """One table's JSON lines, spooled to a temporary file (a tar member's size comes before
    its bytes, and a table of a million jobs should not sit in memory), hashed as written."""

    def __init__(self, cols: list[str]) -> None:
        self.cols = cols
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by add_to
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, rows: Iterable[Any]) -> None:
        for row in rows:
            line = {c: _enc(v) for c, v in zip(self.cols, row, strict=True)}
            data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
            self.file.write(data)
            self.sha.update(data)
            self.count += 1

    def add_to(self, tar: tarfile.TarFile, name: str, members: dict[str, dict[str, Any]]) -> int:
        with self.file:
            info = tarfile.TarInfo(name)
            info.size = self.file.tell()
            self.file.seek(0)
            tar.addfile(info, self.file)
        members[name] = {"sha256": self.sha.hexdigest(), "count": self.count}
        return self.count


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> str:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(data).hexdigest()


async def _add_blob(
    tar: tarfile.TarFile, store: BlobStore, key: str, members: dict[str, dict[str, Any]]
) -> None:
    """The blob under ``key`` as member ``blobs/<key>``, spooled a chunk at a time; a file
    whose upload never committed, or was swept, has none and is skipped."""
    chunks = await store.open_reader(key)
    if chunks is None:
        return
    sha = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        async for chunk in chunks:
            spool.write(chunk)
            sha.update(chunk)
        info = tarfile.TarInfo(f"blobs/{key}")
        info.size = spool.tell()
        spool.seek(0)
        tar.addfile(info, spool)
    members[info.name] = {"sha256": sha.hexdigest()}


async def backup(url: str, path: Path, *, blobs_url: str | None = None) -> Manifest:
    """Write all of ``url``'s records and file blobs to the tar at ``path``."""
    kind = _kind(url)
    members: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    files: list[tuple[str, str]] = []
    backend = backend_from_url(url)
    home = blobs_url or backend.blob_home()
    tmp = path.with_name(path.name + ".part")
    try:
        with tarfile.open(tmp, "w") as tar, tempfile.TemporaryDirectory() as scratch:
            if kind == "sqlite":
                version = await asyncio.to_thread(
                    _sqlite_export, backend.path, Path(scratch), tar, counts, members, files
                )
            else:
                version = await _pg_export(url, tar, counts, members, files)
            store = blob_store_from_url(home)
            await store.connect()
            try:
                for tenant, file_id in files:
                    key = blob_key(tenant, file_id)
                    await _add_blob(tar, store, key, members)
            finally:
                await store.close()
            manifest = {
                "format": FORMAT,
                "source": kind,
                "schema_version": version,
                "counts": counts,
                "members": members,
            }
            _add(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
        tmp.replace(path)
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    blobs = sum(1 for m in members if m.startswith("blobs/"))
    return Manifest(kind, version, counts, blobs)


def _sqlite_export(
    path: str,
    scratch: Path,
    tar: tarfile.TarFile,
    counts: dict[str, int],
    members: dict[str, dict[str, Any]],
    files: list[tuple[str, str]],
) -> int:
    """Copy the database with the sqlite3 backup API (one consistent image, whatever the
    writers do meanwhile), then write its tables; returns its schema version."""
    if not Path(path).exists():
        raise BackupError(f"sqlite:///{path}: no such database file")
    copy = sqlite3.connect(scratch / "copy.db")
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            src.backup(copy)
        finally:
            src.close()
        for table, cols, rows in _sqlite_rows(copy):
            spool = _Spool(cols)
            spool.write(rows)
            counts[table] = spool.add_to(tar, f"tables/{table}.jsonl", members)
        files.extend((r[0], r[1]) for r in copy.execute("SELECT tenant, id FROM files"))
        return _schema_version_sqlite(copy)
    finally:
        copy.close()


async def _pg_export(
    url: str,
    tar: tarfile.TarFile,
    counts: dict[str, int],
    members: dict[str, dict[str, Any]],
    files: list[tuple[str, str]],
) -> int:
    import psycopg

    from genspool.backends.postgres._pool import Settings

    s = Settings.from_url(url, shown_url(url))
    async with await psycopg.AsyncConnection.connect(
        s.conninfo, **s.connect_kwargs(shown_url(url))
    ) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (s.schema,),
            )
            have = {r[0] for r in await cur.fetchall()}
            for table in RECORD_TABLES:
                if table not in have:
                    continue
                async with conn.cursor(name=f"genspool_backup_{table}") as cur:
                    await cur.execute(f'SELECT * FROM "{table}"')
                    spool = _Spool([d.name for d in cur.description or []])
                    while got := await cur.fetchmany(BATCH):
                        spool.write(got)
                counts[table] = spool.add_to(tar, f"tables/{table}.jsonl", members)
            cur = await conn.execute("SELECT tenant, id FROM files")
            files.extend((r[0], r[1]) for r in await cur.fetchall())
            if "schema_version" not in have:
                return 0
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            version = await cur.fetchone()
            return int(version[0]) if version else 0


# -- verifying -------------------------------------------------------------------------------


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path} is not a readable backup archive: {exc}") from exc


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise BackupError(f"archive member {name} is missing")
    return f.read()


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        doc = json.loads(_member(tar, "manifest.json"))
    except ValueError as exc:
        raise BackupError(f"archive member manifest.json is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"manifest.json is not a {FORMAT} manifest")
    return doc


def verify(path: Path) -> Manifest:
    """Check every member against the manifest's sha256 and row count, restoring nothing."""
    with _open(path) as tar:
        doc = _manifest(tar)
        present = set(tar.getnames())
        for name, meta in doc["members"].items():
            f = tar.extractfile(name) if name in present else None
            if f is None:
                raise BackupError(f"archive member {name} is missing")
            sha, lines = hashlib.sha256(), 0
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                lines += chunk.count(b"\n")
            if sha.hexdigest() != meta["sha256"]:
                raise BackupError(f"archive member {name} does not match its checksum")
            if "count" in meta and lines != meta["count"]:
                raise BackupError(f"archive member {name} holds a wrong number of rows")
            table = name[len("tables/") : -len(".jsonl")]
            if "count" in meta and doc["counts"].get(table) != meta["count"]:
                raise BackupError(f"manifest.json counts {table} unlike its member")
        blobs = sum(1 for m in doc["members"] if m.startswith("blobs/"))
        return Manifest(doc["source"], doc["schema_version"], doc["counts"], blobs)


# -- restoring -------------------------------------------------------------------------------


def _rows(tar: tarfile.TarFile, name: str) -> Iterator[dict[str, Any]]:
    """A table member's rows, read a line at a time."""
    f = tar.extractfile(name)
    if f is None:
        raise BackupError(f"archive member {name} is missing")
    for line in f:
        yield {k: _dec(v) for k, v in json.loads(line).items()}


def _requeue(row: dict[str, Any]) -> dict[str, Any]:
    """A job that was running comes back queued, its attempts kept, its lease dropped."""
    if row.get("status") == "running":
        row = {**row, "status": "queued", "lease_token": None, "lease_expires_at": None}
        if "worker" in row:
            row["worker"] = None
    return row


async def restore(path: Path, url: str, *, force: bool = False) -> Manifest:
    """Load the archive at ``path`` into the SQL backend at ``url`` (migrated first).

    Refuses a target that holds any record unless ``force``, which empties it first. Blobs
    go to the target's own blob store, and each file row is pointed at its new place."""
    found = verify(path)
    kind = _kind(url)
    backend = backend_from_url(url)
    await backend.connect()  # creates or migrates the schema
    try:
        store = blob_store_from_url(backend.blob_home())
        with _open(path) as tar:
            doc = _manifest(tar)
            tables = {
                n[len("tables/") : -len(".jsonl")]: n
                for n in doc["members"]
                if n.startswith("tables/")
            }
            fix = _Fixer(store)
            if kind == "sqlite":
                _restore_sqlite(backend.path, tar, tables, force, fix)
            else:
                await _restore_pg(url, tar, tables, force, fix)
            await _restore_blobs(tar, doc, store)
    finally:
        await backend.close()
    return found


class _Fixer:
    """What a row needs on the way in: a running job requeued, a file row's blob URL moved
    to the target's store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def rows(self, tar: tarfile.TarFile, table: str, member: str) -> Iterator[dict[str, Any]]:
        for row in _rows(tar, member):
            if table == "jobs":
                yield _requeue(row)
            elif table == "files":
                yield {**row, "blob": self.store.url_of(blob_key(row["tenant"], row["id"]))}
            else:
                yield row


def _restore_sqlite(
    path: str, tar: tarfile.TarFile, tables: dict[str, str], force: bool, fix: _Fixer
) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        targets = [t for t in RECORD_TABLES if t in have]
        if any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in targets):
            _refuse(force)
            for t in targets:
                db.execute(f"DELETE FROM {t}")
        for table, member in tables.items():
            if table not in have:
                continue
            cols = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            for row in fix.rows(tar, table, member):
                keep = [c for c in row if c in cols]
                marks = ", ".join("?" * len(keep))
                sql = f"INSERT INTO {table} ({', '.join(keep)}) VALUES ({marks})"
                db.execute(sql, [row[c] for c in keep])
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise BackupError(f"restore into {path} failed: {exc}") from exc
    finally:
        db.close()


def _refuse(force: bool) -> None:
    if not force:
        raise BackupError("the target database is not empty; pass --force to replace its records")


async def _restore_pg(
    url: str, tar: tarfile.TarFile, tables: dict[str, str], force: bool, fix: _Fixer
) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    from genspool.backends.postgres._pool import Settings

    shown = shown_url(url)
    s = Settings.from_url(url, shown)
    try:
        async with (
            await psycopg.AsyncConnection.connect(s.conninfo, **s.connect_kwargs(shown)) as conn,
            conn.transaction(),
        ):
            cur = await conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = %s",
                (s.schema,),
            )
            types: dict[str, dict[str, str]] = {}
            for t, c, ty in await cur.fetchall():
                types.setdefault(t, {})[c] = ty
            targets = [t for t in RECORD_TABLES if t in types]
            for t in targets:
                cur = await conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1')
                if await cur.fetchone() is not None:
                    _refuse(force)
                    for u in targets:
                        await conn.execute(f'DELETE FROM "{u}"')
                    break
            for table, member in tables.items():
                cols = types.get(table)
                if cols is None:
                    continue
                batch: list[list[Any]] = []
                keep: tuple[str, ...] = ()
                for row in fix.rows(tar, table, member):
                    shape = tuple(c for c in row if c in cols)
                    if shape != keep or len(batch) >= BATCH:
                        await _insert(conn, table, keep, batch)
                        batch, keep = [], shape
                    batch.append([_to_pg(row[c], cols[c], Jsonb) for c in keep])
                await _insert(conn, table, keep, batch)
    except psycopg.Error as exc:
        raise BackupError(f"restore into {shown} failed: {exc}".splitlines()[0]) from exc


async def _insert(conn: Any, table: str, cols: tuple[str, ...], batch: list[list[Any]]) -> None:
    if batch:
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join(["%s"] * len(cols))
        async with conn.cursor() as cur:
            await cur.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', batch)


def _to_pg(value: Any, pg_type: str, jsonb: Any) -> Any:
    """A stored value in the column type PostgreSQL declares (SQLite keeps 0/1 and text)."""
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "jsonb":
        return jsonb(json.loads(value) if isinstance(value, str | bytes) else value)
    return value


async def _restore_blobs(tar: tarfile.TarFile, doc: dict[str, Any], store: BlobStore) -> None:
    names = [n for n in doc["members"] if n.startswith("blobs/")]
    await store.connect()
    try:
        for name in names:
            f = tar.extractfile(name)
            if f is None:
                raise BackupError(f"archive member {name} is missing")
            writer = await store.open_writer(name[len("blobs/") :])
            try:
                while chunk := f.read(CHUNK_BYTES):
                    await writer.write(chunk)
            except BaseException:
                await writer.abort()
                raise
            await writer.commit()
    finally:
        await store.close()
