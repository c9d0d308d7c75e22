"""``genspool backup`` and ``genspool restore`` of a large SQLite deployment, while it serves.

Target (issue 12): backup of 1,000,000 jobs and 100,000 vectors (SQLite) <= 60 s while
serving; restore <= 2x that.

1. Fill a SQLite file (schema made by the store itself, ``open_storage(url).connect()``):
   ``--jobs`` jobs (``--done`` of them succeeded with a result and a history entry, the rest
   waiting on a model the server does not serve, so nothing runs them) written by direct SQL
   in batches of 10,000 (each row made by the backend's own encoder,
   ``genspool.backends._sql.job_to_row``, of a real :class:`~genspool.core.job.Job`); and
   ``--vectors`` chunks of 384 float32 dimensions in one vector store of 100 files, through
   the store API (``store_put``, ``vfile_put``, ``chunks_put``, ``chunks_flip``).
2. Start ``genspool serve`` on that file, and a client thread that submits ``--rate`` chat
   jobs a second over HTTP (the server's worker runs them on an echo model) for the rest of
   the run; its submit latencies are reported per phase.
3. Time, while it serves: the baseline, a copy of the same file with sqlite3's online backup
   API (what ``genspool backup`` starts with; a consistent copy and nothing more); then
   ``genspool backup FILE`` as a CLI process (interpreter start included); then
   ``genspool backup --verify FILE``.
4. Time ``genspool restore FILE --db`` into a fresh SQLite file, and with ``--postgres`` into
   a fresh database on the PostgreSQL server (created with a unique name, dropped after).

Printed: seconds of each, backup against the 60 s target and against the baseline, restore
against the backup (target <= 2x).

    python bench/backup.py [--jobs 1000000] [--vectors 100000] [--rate 20] [--postgres]
        [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from bench._common import free_port, healthy, pct
from genspool.backends import open_storage
from genspool.backends._sql import job_to_row
from genspool.core.job import Job, JobStatus
from genspool.core.vectors import Chunk, VectorStore, VectorStoreFile

CHAT = "/v1/chat/completions"
DIMS = 384
FILES = 100
GENSPOOL = [sys.executable, "-m", "genspool"]
JOB_COLUMNS = (
    "id, tenant, url, model, body, status, priority, attempts, max_attempts, idempotency_key,"
    " metadata, expires_at, created_at, available_at, started_at, retried_at, finished_at,"
    " lease_token, lease_expires_at, result, error, rank, worker, history"
)


# -- filling -----------------------------------------------------------------------------------


def _job(i: int, done: bool, now: float) -> Job:
    text = f"Summarise ticket {i}: the customer reports that the export of report {i % 977} fails."
    body = {"model": "echo", "messages": [{"role": "user", "content": text}], "max_tokens": 64}
    job = Job(CHAT, body, "echo" if done else "offline", id=f"job_{i:016x}bench",
              tenant=f"tenant-{i % 50}", created_at=now - 3600 + i * 1e-3)  # fmt: skip
    if done:
        answer = {"role": "assistant", "content": f"Report {i % 977} export fails; retry with"
                  " a smaller date range, then contact support with the request id."}  # fmt: skip
        job.status, job.attempts = JobStatus.SUCCEEDED, 1
        job.started_at, job.finished_at = job.created_at + 0.5, job.created_at + 1.2
        job.worker = "worker-bench"
        job.result = {
            "status_code": 200,
            "body": {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "echo",
                     "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 21, "completion_tokens": 19,
                               "total_tokens": 40}},
        }  # fmt: skip
        job.history = [{"attempt": 1, "worker": "worker-bench", "started_at": job.started_at,
                        "ended_at": job.finished_at, "outcome": "succeeded",
                        "error": None}]  # fmt: skip
    return job


async def make_schema(url: str) -> None:
    storage = open_storage(url)
    await storage.connect()
    await storage.close()


def fill_jobs(db_path: Path, jobs: int, done_share: float) -> None:
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA synchronous = OFF")
    marks = ", ".join("?" * 24)
    sql = f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({marks})"
    now, done_below = time.time(), int(jobs * done_share)
    for start in range(0, jobs, 10_000):
        rows = [
            job_to_row(_job(i, i < done_below, now))
            for i in range(start, min(jobs, start + 10_000))
        ]
        with db:
            db.executemany(sql, rows)
    db.close()


async def fill_vectors(url: str, vectors: int) -> None:
    storage = open_storage(url)
    await storage.connect()
    try:
        records, chunks = storage.vectors, storage.chunks
        assert records is not None and chunks is not None
        now, rng = time.time(), np.random.default_rng(7)
        store = VectorStore("vs_bench", "tenant-0", now, "all-minilm-l6-v2", DIMS, name="bench")
        await records.store_put(store)
        per_file = -(-vectors // FILES)
        for f in range(FILES):
            n = min(per_file, vectors - f * per_file)
            if n <= 0:
                break
            file_id = f"file-bench{f:04d}"
            await records.vfile_put(VectorStoreFile(
                file_id, store.id, store.tenant, now, status="completed", generation=1, chunks=n,
                chunking={"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                       "chunk_overlap_tokens": 400}},
            ))  # fmt: skip
            unit = rng.standard_normal((n, DIMS)).astype("<f4")
            unit /= np.linalg.norm(unit, axis=1, keepdims=True)
            for lo in range(0, n, 2_000):
                await chunks.chunks_put([
                    Chunk(store.id, file_id, 1, s, f"Paragraph {s} of document {f}: " + "lorem "
                          * 60, s * 400, s * 400 + 390, 80, unit[s].tobytes(),
                          headings=(f"Document {f}",), attributes={"source": f"doc-{f}"})
                    for s in range(lo, min(n, lo + 2_000))
                ])  # fmt: skip
            await chunks.chunks_flip(store.id, file_id, 1)
    finally:
        await storage.close()


# -- serving -----------------------------------------------------------------------------------


class Trickle(threading.Thread):
    """Submits ``rate`` chat jobs a second; keeps each submit's latency under the phase's
    name."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.phase = "idle"
        self.latencies: dict[str, list[float]] = {}
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n, next_at = 0, time.monotonic()
            while not self.halt.is_set():
                body = {"model": "echo", "messages": [{"role": "user", "content": f"live {n}"}]}
                t = time.perf_counter()
                r = client.post("/v1/jobs", json={"url": CHAT, "body": body})
                self.latencies.setdefault(self.phase, []).append(time.perf_counter() - t)
                self.refused += r.status_code != 202
                n += 1
                next_at += 1 / self.rate
                time.sleep(max(0.0, next_at - time.monotonic()))


def serve(tmp: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / "models.yaml").write_text("models:\n  - name: echo\n    provider: echo\n")
    port = free_port()
    proc = subprocess.Popen(
        [*GENSPOOL, "serve", "--port", str(port), "--config", str(tmp / "models.yaml"),
         "--db", f"sqlite:///{db}"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "GENSPOOL_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("genspool serve did not start")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def timed(what: str, *args: str) -> float:
    t = time.perf_counter()
    done = subprocess.run([*GENSPOOL, *args], capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}): {done.stderr.strip()}")
    print(f"  {what}: {took:.1f} s   ({done.stdout.strip()})", flush=True)
    return took


def sqlite_copy(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    a, b = sqlite3.connect(f"file:{src}?mode=ro", uri=True), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()
    return time.perf_counter() - t


def gb(path: Path) -> str:
    return f"{path.stat().st_size / 1e9:.2f} GB"


# -- the run -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="genspool-bench-backup-", dir=args.dir))
    db, archive = tmp / "g.db", tmp / "state.tar"
    url = f"sqlite:///{db}"
    t = time.perf_counter()
    asyncio.run(make_schema(url))
    fill_jobs(db, args.jobs, args.done)
    jobs_s = time.perf_counter() - t
    t = time.perf_counter()
    asyncio.run(fill_vectors(url, args.vectors))
    print(
        f"filled {db}: {args.jobs:,} jobs ({int(args.jobs * args.done):,} with results; direct"
        f" SQL, rows by job_to_row) in {jobs_s:.1f} s, {args.vectors:,} vectors x {DIMS}"
        f" (store API) in {time.perf_counter() - t:.1f} s; {gb(db)}",
        flush=True,
    )

    server, api = serve(tmp, db)
    trickle = Trickle(api, args.rate)
    trickle.start()
    try:
        time.sleep(3)
        print(f"while genspool serve takes {args.rate:g} submits/s over HTTP:")
        trickle.phase = "baseline copy"
        base = sqlite_copy(db, tmp / "copy.db")
        print(f"  baseline, sqlite3 backup API copy of the file: {base:.1f} s", flush=True)
        (tmp / "copy.db").unlink()
        trickle.phase = "genspool backup"
        took = timed("genspool backup", "backup", str(archive), "--db", url)
        trickle.phase = "verify"
        verify = timed("genspool backup --verify", "backup", "--verify", str(archive))
        trickle.phase = "after"
        time.sleep(2)
    finally:
        trickle.halt.set()
        trickle.join(60)
        server.terminate()
        server.wait(60)
    for phase, values in trickle.latencies.items():
        print(f"  submit latency during {phase}: p50 {pct(values, 0.5):.1f} ms,"
              f" p99 {pct(values, 0.99):.1f} ms ({len(values)} submits)")  # fmt: skip
    print(f"  refused submits: {trickle.refused}; archive {gb(archive)}, database {gb(db)}")

    print("restore (nothing else running):")
    restored = timed("genspool restore -> fresh SQLite", "restore", str(archive), "--db",
                     f"sqlite:///{tmp / 'restored.db'}")  # fmt: skip
    pg_took = None
    if args.postgres:
        pg_took = restore_pg(archive, args.pg_url)

    print("\nresults:")
    print(f"  backup  {took:6.1f} s = {took / 60:.2f} x the 60 s target;"
          f" {took / base:.1f} x the baseline copy ({base:.1f} s)")  # fmt: skip
    print(f"  verify  {verify:6.1f} s")
    print(f"  restore {restored:6.1f} s (SQLite) = {restored / took:.2f} x the backup"
          f" (target <= 2x)")  # fmt: skip
    if pg_took is not None:
        print(f"  restore {pg_took:6.1f} s (PostgreSQL) = {pg_took / took:.2f} x the backup"
              f" (target <= 2x)")  # fmt: skip
    if not args.keep:
        for p in tmp.iterdir():
            if p.is_file():
                p.unlink()


def restore_pg(archive: Path, admin_url: str) -> float:
    import psycopg

    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(admin_url)
    target = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return timed("genspool restore -> fresh PostgreSQL", "restore", str(archive), "--db",
                     target)  # fmt: skip
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--done", type=float, default=0.9, help="share of jobs with a result")
    parser.add_argument("--rate", type=float, default=20.0, help="submits a second meanwhile")
    parser.add_argument("--postgres", action="store_true", help="also restore to PostgreSQL")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--dir", help="where the temporary directory goes (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    main(parser.parse_args())
