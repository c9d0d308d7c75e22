"""One archive of a deployment's state, checked and restored into any SQL backend.

The archive is a tar: ``manifest.json`` (format, schema version, source kind, and per member
its row count and sha256), one ``tables/<name>.jsonl`` per record table, and ``blobs/<key>``
per stored file and per output segment of a batch still running. Rows are copied table by
table rather than through the storage roles: the SQLite and PostgreSQL schemas carry the same
tables and columns, so a row-level copy covers every record kind (jobs with results and
history, keys, files, batches, pipelines, webhooks, prompts, vectors, drift samples) with no
per-role export code, and restores bit for bit. Consistency while the service runs: SQLite is
read in one read transaction (WAL mode's snapshot; a database not in WAL mode is first copied
with the sqlite3 backup API), PostgreSQL in one REPEATABLE READ transaction.
Leases, slots and rate-limit state are not kept: a restored job that was running comes
back queued with its attempts, and a batch, pipeline run or vector store file that a runner
held comes back free, so a restored instance carries on at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from genspool.backends import backend_from_url, shown_url
from genspool.batches.output import segment_key
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


# -- reading the source ----------------------------------------------------------------------


def _kind(url: str) -> str:
    scheme = url.partition("://")[0].split("+", 1)[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise BackupError(f"{shown_url(url)}: backup and restore need a sqlite:// or postgresql:// URL")


def _blob(value: Any) -> Any:
    """orjson's ``default``: bytes (which it does not write) as ``{"$b": base64}``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": binascii.b2a_base64(value, newline=False).decode()}
    raise TypeError(f"a column value of type {type(value).__name__} cannot be backed up")


class _Archive:
    """A tar written a member at a time, each member's bytes streamed into it as they come:
    its header goes first with size 0 and is written again with the size once the bytes are
    in. The GNU format's header has the same length whatever the size (a size past 8 GiB is
    written in base-256 in the same field), so nothing is spooled or copied twice. Read back
    with :mod:`tarfile`."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.mtime = int(time.time())
        self.members: dict[str, dict[str, Any]] = {}

    def begin(self, name: str) -> _Member:
        return _Member(self, name)

    def add(self, name: str, data: bytes) -> None:
        member = self.begin(name)
        member.write(data)
        member.end()

    def close(self) -> None:
        """Two zero blocks end the archive; it is padded to a whole record, as tar does."""
        with self.file:
            self.file.write(b"\0" * (2 * tarfile.BLOCKSIZE))
            self.file.write(b"\0" * (-self.file.tell() % tarfile.RECORDSIZE))


class _Member:
    """One member of an :class:`_Archive` being written, hashed as it goes."""

    def __init__(self, archive: _Archive, name: str) -> None:
        self.archive, self.file = archive, archive.file
        self.info = tarfile.TarInfo(name)
        self.info.mtime = archive.mtime
        self.at = self.file.tell()
        self.header = self.info.tobuf(tarfile.GNU_FORMAT)
        self.file.write(self.header)
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def end(self, **meta: Any) -> None:
        """Pad the bytes to a whole block, write the header again with their size, and note
        the member's sha256 (and ``meta``) for the manifest."""
        end = self.file.tell()
        self.file.write(b"\0" * (-self.size % tarfile.BLOCKSIZE))
        after = self.file.tell()
        self.info.size = self.size
        header = self.info.tobuf(tarfile.GNU_FORMAT)
        if len(header) != len(self.header) or end - self.at != len(header) + self.size:
            raise BackupError(f"archive member {self.info.name}: its header changed length")
        self.file.seek(self.at)
        self.file.write(header)
        self.file.seek(after)
        self.archive.members[self.info.name] = {"sha256": self.sha.hexdigest(), **meta}


class _TableMember:
    """A table's rows as the JSON lines of member ``tables/<table>.jsonl``."""

    def __init__(self, archive: _Archive, table: str, cols: list[str]) -> None:
        self.member = archive.begin(f"tables/{table}.jsonl")
        self.cols = cols
        self.count = 0

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of plain values (PostgreSQL's ``jsonb`` made text first by ``_enc``)."""
        cols, dumps, option = self.cols, orjson.dumps, orjson.OPT_APPEND_NEWLINE
        lines = [dumps(dict(zip(cols, row, strict=True)), default=_blob, option=option)
                 for row in rows]  # fmt: skip
        self.member.write(b"".join(lines))
        self.count += len(lines)

    def end(self) -> int:
        self.member.end(count=self.count)
        return self.count


async def _add_blobs(archive: _Archive, home: str, keys: list[str]) -> None:
    """Each blob under ``keys`` as member ``blobs/<key>``, a chunk at a time; one that is
    gone (an upload that never committed, a file swept, a batch's segments dropped once it
    ended) is skipped."""
    store = blob_store_from_url(home)
    await store.connect()
    try:
        for key in keys:
            chunks = await store.open_reader(key)
            if chunks is None:
                continue
            member = archive.begin(f"blobs/{key}")
            async for chunk in chunks:
                member.write(chunk)
            member.end()
    finally:
        await store.close()


def _blob_keys(files: Iterable[tuple[str, str]], batches: Iterable[Any]) -> list[str]:
    """The blobs the records point at: each file's, and the output segments a batch still
    running has committed (blobs of no file, joined into its output file when it ends)."""
    keys = [blob_key(tenant, file_id) for tenant, file_id in files]
    for (doc,) in batches:
        b = json.loads(doc)
        if isinstance(b, dict) and b.get("segments"):
            keys += [
                segment_key(b["tenant"], b["id"], kind, n)
                for n in range(int(b["segments"]))
                for kind in ("o", "e")
            ]
    return keys


async def backup(url: str, path: Path, *, blobs_url: str | None = None) -> Manifest:
    """Write all of ``url``'s records and blobs to the tar at ``path``.

    The records are one moment's (SQLite: one read transaction, :func:`_sqlite_snapshot`;
    PostgreSQL: one REPEATABLE READ transaction). Blobs are immutable once committed, and are
    read right after that moment, before the tables are written, so that a blob the moment's
    records point at has the least time to be deleted (a file deleted, a finished batch's
    segments dropped)."""
    kind = _kind(url)
    counts: dict[str, int] = {}
    backend = backend_from_url(url)
    home = blobs_url or backend.blob_home()
    tmp = path.with_name(path.name + ".part")
    try:
        archive = _Archive(tmp)
        try:
            if kind == "sqlite":
                with tempfile.TemporaryDirectory() as scratch:
                    snap = await asyncio.to_thread(_sqlite_snapshot, backend.path, Path(scratch))
                    try:
                        await _add_blobs(archive, home, _sqlite_blob_keys(snap))
                        version = await asyncio.to_thread(_sqlite_tables, snap, archive, counts)
                    finally:
                        snap.close()
            else:
                version = await _pg_export(url, home, archive, counts)
            manifest = {
                "format": FORMAT,
                "source": kind,
                "schema_version": version,
                "counts": counts,
                "members": archive.members,
            }
            archive.add("manifest.json", json.dumps(manifest, indent=1).encode())
        finally:
            archive.close()
        tmp.replace(path)
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    blobs = sum(1 for m in archive.members if m.startswith("blobs/"))
    return Manifest(kind, version, counts, blobs)


def _sqlite_snapshot(path: str, scratch: Path) -> sqlite3.Connection:
    """A connection that reads one moment of the database, whatever the writers do meanwhile.

    In WAL mode (genspool's own): the database itself, in one read transaction (a snapshot;
    writers go on, and the WAL grows past its checkpoint until the backup ends). Otherwise a
    reader would hold the writers off, so: a copy made with the sqlite3 backup API in one step."""
    if not Path(path).exists():
        raise BackupError(f"sqlite:///{path}: no such database file")
    src = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        if str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot
            return src
        copy = sqlite3.connect(scratch / "copy.db", check_same_thread=False)
        try:
            src.backup(copy)
        except BaseException:
            copy.close()
            raise
    except BaseException:
        src.close()
        raise
    src.close()
    return copy


def _sqlite_blob_keys(snap: sqlite3.Connection) -> list[str]:
    have = {r[0] for r in snap.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    files = snap.execute("SELECT tenant, id FROM files").fetchall() if "files" in have else []
    batches = (
        snap.execute("SELECT doc FROM batches WHERE active = 1").fetchall()
        if "batches" in have
        else []
    )
    return _blob_keys(files, batches)


def _sqlite_tables(snap: sqlite3.Connection, archive: _Archive, counts: dict[str, int]) -> int:
    """Write the snapshot's tables; returns its schema version."""
    have = {r[0] for r in snap.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in RECORD_TABLES:
        if table in have:
            cur = snap.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            member = _TableMember(archive, table, cols)
            while got := cur.fetchmany(BATCH):
                member.write(got)
            counts[table] = member.end()
    return int(snap.execute("PRAGMA user_version").fetchone()[0])


async def _pg_export(url: str, home: str, archive: _Archive, counts: dict[str, int]) -> int:
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
            files = await (await conn.execute("SELECT tenant, id FROM files")).fetchall()
            batches: list[Any] = []
            if "batches" in have:
                cur = await conn.execute("SELECT doc FROM batches WHERE active")
                batches = [(bytes(r[0]),) for r in await cur.fetchall()]
            await _add_blobs(archive, home, _blob_keys(files, batches))
            for table in RECORD_TABLES:
                if table not in have:
                    continue
                async with conn.cursor(name=f"genspool_backup_{table}") as cur:
                    await cur.execute(f'SELECT * FROM "{table}"')
                    member = _TableMember(archive, table, [d.name for d in cur.description or []])
                    while got := await cur.fetchmany(BATCH):
                        member.write([[_enc(v) for v in row] for row in got])
                counts[table] = member.end()
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
    """A table member's rows, read a line at a time (``{"$b": base64}`` back to bytes)."""
    f = tar.extractfile(name)
    if f is None:
        raise BackupError(f"archive member {name} is missing")
    loads, unb64 = orjson.loads, binascii.a2b_base64
    for line in f:
        row = loads(line)
        for k, v in row.items():
            if type(v) is dict and "$b" in v:
                row[k] = unb64(v["$b"])
        yield row


def _shaped(
    rows: Iterable[dict[str, Any]], cols: Container[str]
) -> Iterator[tuple[tuple[str, ...], list[list[Any]]]]:
    """``rows`` as batches of at most ``BATCH`` value lists, each batch's rows of one shape:
    the columns of theirs the target has (``cols``), in the archive's order."""
    keys: Any = None
    keep: tuple[str, ...] = ()
    batch: list[list[Any]] = []
    for row in rows:
        if row.keys() != keys:
            if batch:
                yield keep, batch
                batch = []
            keys, keep = row.keys(), tuple(c for c in row if c in cols)
        batch.append([row[c] for c in keep])
        if len(batch) >= BATCH:
            yield keep, batch
            batch = []
    if batch:
        yield keep, batch


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


#: The record tables whose JSON ``doc`` may hold a runner's lease (``owner``, ``lease_until``).
_LEASED_DOCS = frozenset({"batches", "runs", "vector_files"})


def _unleased(row: dict[str, Any]) -> dict[str, Any]:
    """A batch, pipeline run or vector store file that a runner of the old deployment held
    comes back free, so the restored instance's runner takes it at once (no runner of the old
    deployment drives the restored database; the lease would only make it wait)."""
    doc = row.get("doc")
    if doc is None:
        return row
    record = orjson.loads(doc)
    if not isinstance(record, dict) or record.get("owner") is None:
        return row
    record.update(owner=None, lease_until=0.0)
    data = orjson.dumps(record)  # as the store writes a record
    return {**row, "doc": data if isinstance(doc, bytes) else data.decode()}


class _Fixer:
    """What a row needs on the way in: a running job requeued, a runner's lease on a record
    dropped, a file row's blob URL moved to the target's store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def rows(self, tar: tarfile.TarFile, table: str, member: str) -> Iterator[dict[str, Any]]:
        for row in _rows(tar, member):
            if table == "jobs":
                yield _requeue(row)
            elif table in _LEASED_DOCS:
                yield _unleased(row)
            elif table == "files":
                yield {**row, "blob": self.store.url_of(blob_key(row["tenant"], row["id"]))}
            else:
                yield row


def _restore_sqlite(
    path: str, tar: tarfile.TarFile, tables: dict[str, str], force: bool, fix: _Fixer
) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB: big tables' indexes stay cached
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
            for keep, batch in _shaped(fix.rows(tar, table, member), cols):
                marks = ", ".join("?" * len(keep))
                sql = f"INSERT INTO {table} ({', '.join(keep)}) VALUES ({marks})"
                db.executemany(sql, batch)
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
                for keep, batch in _shaped(fix.rows(tar, table, member), cols):
                    typed = [(i, cols[c]) for i, c in enumerate(keep) if cols[c] in _PG_TYPED]
                    for values in batch:
                        for i, pg_type in typed:
                            values[i] = _to_pg(values[i], pg_type, Jsonb)
                    await _copy(conn, table, keep, batch)
    except psycopg.Error as exc:
        raise BackupError(f"restore into {shown} failed: {exc}".splitlines()[0]) from exc


#: The PostgreSQL column types whose values :func:`_to_pg` changes.
_PG_TYPED = frozenset({"boolean", "jsonb"})


async def _copy(conn: Any, table: str, cols: tuple[str, ...], batch: list[list[Any]]) -> None:
    """``batch`` into ``table`` by ``COPY … FROM STDIN`` (a tenth of the time of INSERTs)."""
    names = ", ".join(f'"{c}"' for c in cols)
    async with conn.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for values in batch:
            await copy.write_row(values)


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
