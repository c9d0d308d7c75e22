"""Backup while the service runs, restored onto PostgreSQL (issue 12, item 6, its must-show).

A real ``genspool serve`` process on a SQLite file runs a chat model that calls a counting
upstream (a small FastAPI app under uvicorn on 127.0.0.1, on a thread of this process: it
records every request's prompt and answers it back after a delay, so a backlog builds up) and
the bundled MiniLM embedding model (ONNX, real). While a client thread keeps submitting jobs
over HTTP, a 300-line batch (Batch API) and the ingest of a long document into a vector store
are running, ``genspool backup FILE`` runs as a CLI process; ``--verify`` checks the archive.

The archive is then restored with ``genspool restore`` into a fresh PostgreSQL database on
the shared server (its own name, dropped at the end), and a second ``genspool backup`` of the
restored database is compared with the first table by table: a digest of each table's rows
(normalised only where the two backends store the same value differently: SQLite's own
``jobs.seq``, a file's blob location, JSON text against ``jsonb``, 0/1 against booleans) and
each blob's sha256 are equal, after the restore's documented changes (a running job comes back
queued with its attempts; a runner's lease on a batch or vector store file is dropped).

Then ``genspool serve`` on the restored database, with a second counting upstream, carries
on: every job that was queued or running at backup time succeeds, the batch completes with
every line exactly once, the ingest completes and is searchable, the prompt and the file are
there; no job that had ended at backup time ran again (none of their prompts reached the new
upstream, their rows are unchanged), every other prompt reached it exactly once, and no job's
history holds two successful attempts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.helpers.processes import SERVERS, TERMINAL, Server, Spawner
from tests.helpers.upstream import served

pytestmark = pytest.mark.slow  # the bundled embedding model

CHAT = "/v1/chat/completions"
EMBEDDER = {"name": "all-minilm-l6-v2", "provider": "onnx_embedding", "context_window": 256}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
BATCH_LINES = 300
WORDS = [
    "river", "stone", "lantern", "orchard", "copper", "meadow", "harbor", "falcon",
    "ember", "willow", "granite", "comet", "thistle", "canyon", "velvet", "marble",
    "beacon", "tundra", "saffron", "glacier", "quill", "prairie", "cobalt", "fjord",
]  # fmt: skip


def _doc(paragraphs: int, seed: str) -> str:
    """A document of distinct paragraphs (each its own chunk, and its own embedding)."""
    out = []
    for n in range(paragraphs):
        words = [WORDS[(n * 7 + k * 3 + len(seed)) % len(WORDS)] for k in range(45)]
        out.append(f"Section {seed}-{n}. " + " ".join(words) + f" (entry {n} of {seed}).")
    return "\n\n".join(out) + "\n"


def chat_model(base_url: str) -> dict[str, Any]:
    return {
        "name": "chat",
        "provider": "openai",
        "options": {"base_url": base_url},
        "max_attempts": 3,
        "batching": {"max_batch_size": 4, "max_concurrency": 1, "max_wait_ms": 0},
        "limits": {"call_retries": 0, "timeout_s": 10},
        "breaker": {"enabled": False},
    }


def counting_upstream(arrivals: Counter[str], delay_s: float) -> FastAPI:
    """An OpenAI-compatible chat endpoint that counts each prompt's arrivals and answers it
    back after ``delay_s``."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        text = body["messages"][-1]["content"]
        arrivals[text] += 1
        await asyncio.sleep(delay_s)
        message = {"role": "assistant", "content": text}
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    return app


@pytest.fixture
def pg_database(spawner: Spawner) -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, dropped (after the test's processes
    are stopped) with all in it."""
    base = urlsplit(SERVERS["postgres"])
    name = f"gs_backup_{uuid.uuid4().hex[:10]}"
    admin = urlunsplit(base._replace(path="/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no PostgreSQL at {admin}: {exc}")
    try:
        yield urlunsplit(base._replace(path=f"/{name}"))
    finally:
        spawner.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Submitter(threading.Thread):
    """A client that keeps submitting chat jobs (``live <n>``) until told to stop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.sent: dict[str, str] = {}  # prompt -> job id
        self.refused: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self.halt.is_set():
                text = f"live {n}"
                body = {"model": "chat", "messages": [{"role": "user", "content": text}]}
                r = client.post("/v1/jobs", json={"url": CHAT, "body": body})
                if r.status_code == 202:
                    self.sent[text] = r.json()["id"]
                else:
                    self.refused.append(f"{r.status_code} {r.text}")
                n += 1
                time.sleep(0.01)


# -- reading an archive ------------------------------------------------------------------------


def _value(v: Any) -> Any:
    return base64.b64decode(v["$b"]) if isinstance(v, dict) and "$b" in v else v


def tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each table of an archive, its rows as stored (bytes as bytes)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.name.startswith("tables/"):
                f = tar.extractfile(m)
                assert f is not None
                rows = [{k: _value(v) for k, v in json.loads(line).items()} for line in f]
                out[m.name[len("tables/") : -len(".jsonl")]] = rows
    return out


def blobs(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {
            m.name: hashlib.sha256(f.read()).hexdigest()
            for m in tar.getmembers()
            if m.name.startswith("blobs/") and (f := tar.extractfile(m)) is not None
        }


def _json(v: Any) -> Any:
    """A stored value, as comparable across backends: JSON (bytes or text) parsed, other bytes
    as hex, a boolean as 0/1."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, bytes | str):
        try:
            return json.loads(v)
        except ValueError:
            return v.hex() if isinstance(v, bytes) else v
    return v


#: Columns only one backend has, or whose value is where each backend keeps it.
NOT_COMPARED = {("jobs", "seq"), ("files", "blob")}


def digest(table: str, rows: list[dict[str, Any]]) -> tuple[int, str]:
    """A table's row count and a sha256 over its rows, normalised and in a fixed order."""
    lines = sorted(
        json.dumps(
            {k: _json(v) for k, v in row.items() if (table, k) not in NOT_COMPARED},
            sort_keys=True,
        )
        for row in rows
    )
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def as_restored(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``genspool restore`` documents writing it."""
    if table == "jobs" and row["status"] == "running":
        return {**row, "status": "queued", "lease_token": None, "lease_expires_at": None,
                "worker": None}  # fmt: skip
    if table in ("batches", "runs", "vector_files"):
        doc = json.loads(row["doc"])
        if doc.get("owner") is not None:
            doc.update(owner=None, lease_until=0.0)
            return {**row, "doc": json.dumps(doc).encode()}
    return row


def prompt_of(job: dict[str, Any]) -> str | None:
    body = json.loads(job["body"])
    messages = body.get("messages") if isinstance(body, dict) else None
    return str(messages[-1]["content"]) if messages else None


def successes(job: dict[str, Any]) -> int:
    history = json.loads(job["history"]) if job["history"] else []
    return sum(1 for attempt in history if attempt["outcome"] == "succeeded")


# -- the test ----------------------------------------------------------------------------------


def _wait(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def _vfile(server: Server, store: str, file_id: str) -> dict[str, Any]:
    got = server.client.get(f"/v1/vector_stores/{store}/files/{file_id}")
    assert got.status_code == 200, got.text
    out: dict[str, Any] = got.json()
    return out


def _upload(server: Server, name: str, data: bytes, purpose: str) -> str:
    up = server.client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert up.status_code == 200, up.text
    file_id: str = up.json()["id"]
    return file_id


def _attach(server: Server, store: str, file_id: str) -> None:
    body = {"file_id": file_id, "chunking_strategy": STATIC}
    r = server.client.post(f"/v1/vector_stores/{store}/files", json=body)
    assert r.status_code == 200, r.text


def _fill(server: Server) -> dict[str, Any]:
    """Prompts, a vector store with one document ingested and a long one being ingested, and
    a batch under way; returns their ids."""
    seen: dict[str, Any] = {}
    c = server.client
    for template in ("Hello {{name}}", "Hi {{name}}, welcome"):
        spec = {"id": "greet", "kind": "text", "template": template, "labels": ["production"]}
        r = c.post("/v1/prompts", json=spec)
        assert r.status_code == 201, r.text
    store = c.post("/v1/vector_stores", json={"name": "docs", "model": EMBEDDER["name"]})
    assert store.status_code == 200, store.text
    seen["store"] = store.json()["id"]
    seen["small_doc"] = _doc(12, "small").encode()
    seen["small"] = _upload(server, "small.md", seen["small_doc"], "assistants")
    _attach(server, seen["store"], seen["small"])
    _wait(
        "the small document to be ingested",
        lambda: _vfile(server, seen["store"], seen["small"])["status"] == "completed",
        120,
    )
    seen["big"] = _upload(server, "big.md", _doc(1500, "big").encode(), "assistants")
    _attach(server, seen["store"], seen["big"])
    lines = [
        {"custom_id": f"line-{i}", "method": "POST", "url": CHAT,
         "body": {"model": "chat", "messages": [{"role": "user", "content": f"batch {i}"}]}}
        for i in range(BATCH_LINES)
    ]  # fmt: skip
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    source = _upload(server, "input.jsonl", data, "batch")
    made = c.post(
        "/v1/batches",
        json={"input_file_id": source, "endpoint": CHAT, "completion_window": "24h"},
    )
    assert made.status_code == 200, made.text
    seen["batch"] = made.json()["id"]
    return seen


def test_a_backup_under_load_restores_onto_postgres_and_carries_on(
    spawner: Spawner, pg_database: str
) -> None:
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    archive, again, final = (spawner.root / n for n in ("live.tar", "again.tar", "final.tar"))
    src = spawner.root / "live.db"
    with served(counting_upstream(before, 0.1)) as first_url:
        live = spawner.server([chat_model(first_url), EMBEDDER], db=src)
        seen = _fill(live)
        submitter = Submitter(live.url)
        submitter.start()
        try:
            _wait(
                "the batch to be running, and a backlog of submitted jobs",
                lambda: (
                    (b := live.client.get(f"/v1/batches/{seen['batch']}").json())["status"]
                    == "in_progress"
                    and b["request_counts"]["completed"] > 0
                    and len(submitter.sent) > 50
                ),
                60,
                interval=0.05,
            )
            submitted_at_start = len(submitter.sent)
            t = time.monotonic()
            wrote = spawner.run("backup", str(archive), "--db", spawner.sqlite_url(src))
            took = time.monotonic() - t
            submitted_at_end = len(submitter.sent)
        finally:
            submitter.halt.set()
            submitter.join(30)
        assert wrote.returncode == 0, wrote.stderr
        assert "wrote" in wrote.stdout, wrote.stdout
        assert not submitter.refused, submitter.refused[:3]
        # The client kept submitting while the backup ran.
        assert submitted_at_end > submitted_at_start, (took, submitted_at_start)
        live.proc.stop()

    checked = spawner.run("backup", "--verify", str(archive))
    assert checked.returncode == 0 and "verified" in checked.stdout, checked.stderr
    saved = tables(archive)
    with tarfile.open(archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        manifest = json.load(f)
    assert {t: len(r) for t, r in saved.items()} == manifest["counts"]

    # The archive caught everything mid-way: jobs ended and waiting, the batch running, the
    # long document being ingested while the short one is searchable, the prompt's versions.
    status = Counter(j["status"] for j in saved["jobs"] if j["model"] == "chat")
    assert status["succeeded"] > 0 and status["queued"] + status["running"] > 0, status
    assert (
        submitted_at_start
        <= sum(1 for j in saved["jobs"] if (prompt_of(j) or "").startswith("live "))
        <= submitted_at_end + 1
    )  # one more may be stored whose answer was still on its way
    (batch_row,) = saved["batches"]
    assert json.loads(batch_row["doc"])["status"] == "in_progress"
    vfiles = {r["id"]: r["status"] for r in saved["vector_files"]}
    assert vfiles == {seen["small"]: "completed", seen["big"]: "in_progress"}, vfiles
    assert saved["chunks"] and saved["embedding_cache"], "no vectors in the archive"
    assert len(saved["prompt_versions"]) == 2 and saved["prompt_labels"]
    assert len(blobs(archive)) >= 3  # two documents, the batch input (and any segments)
    print(  # shown with -s: what the archive caught
        f"backup took {took:.1f} s while {submitted_at_end - submitted_at_start} jobs were"
        f" submitted; chat jobs {dict(status)}; batch {json.loads(batch_row['doc'])['written']}"
        f"/{BATCH_LINES} lines written; {len(saved['chunks'])} chunks;"
        f" {len(blobs(archive))} blobs"
    )

    # Restore onto PostgreSQL; the restored database holds the same records.
    restored = spawner.run("restore", str(archive), "--db", pg_database, timeout=180)
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout, restored.stdout
    dumped = spawner.run("backup", str(again), "--db", pg_database, timeout=180)
    assert dumped.returncode == 0, dumped.stderr
    back = tables(again)
    expected = {
        t: digest(t, [as_restored(t, r) for r in rows]) for t, rows in saved.items() if rows
    }
    assert {t: digest(t, rows) for t, rows in back.items() if rows} == expected
    for table in ("jobs", "files", "chunks", "chunk_heads", "embedding_cache",
                  "prompt_versions", "prompt_labels", "prompt_audit", "batches"):  # fmt: skip
        assert expected[table][0] == manifest["counts"][table], table
    assert blobs(again) == blobs(archive)

    # The restored instance carries on, on another upstream.
    with served(counting_upstream(after, 0.0)) as second_url:
        carry = spawner.server([chat_model(second_url), EMBEDDER], db_url=pg_database)
        batch = _wait(
            "the batch to complete on the restored instance",
            lambda: (
                b
                if (b := carry.client.get(f"/v1/batches/{seen['batch']}").json())["status"]
                in ("completed", "failed", "cancelled", "expired")
                else None
            ),
            180,
        )
        assert batch["status"] == "completed", batch
        assert batch["request_counts"] == {
            "total": BATCH_LINES, "completed": BATCH_LINES, "failed": 0
        }  # fmt: skip
        big = _wait(
            "the long document's ingest to end on the restored instance",
            lambda: (v if (v := _vfile(carry, seen["store"], seen["big"]))["status"]
                     != "in_progress" else None),
            300,
        )  # fmt: skip
        assert big["status"] == "completed", big
        waiting = [j["id"] for j in saved["jobs"] if j["status"] not in TERMINAL]
        ended = carry.wait_all(waiting, timeout=120)
        assert {j["status"] for j in ended} == {"succeeded"}, Counter(j["status"] for j in ended)

        output = carry.client.get(f"/v1/files/{batch['output_file_id']}/content")
        assert output.status_code == 200, output.text
        custom_ids = Counter(json.loads(x)["custom_id"] for x in output.content.splitlines())
        assert custom_ids == Counter(f"line-{i}" for i in range(BATCH_LINES))
        found = carry.client.post(
            f"/v1/vector_stores/{seen['store']}/search",
            json={"query": "Section big-700 entry 700", "max_num_results": 5},
        )
        assert found.status_code == 200 and found.json()["data"], found.text
        prompt = carry.client.get("/v1/prompts/greet", params={"label": "production"})
        assert prompt.status_code == 200 and "welcome" in prompt.text, prompt.text
        content = carry.client.get(f"/v1/files/{seen['small']}/content")
        assert content.content == seen["small_doc"]
        carry.proc.stop()
        dumped = spawner.run("backup", str(final), "--db", pg_database, timeout=180)
        assert dumped.returncode == 0, dumped.stderr

    # No job completed twice: the jobs that had ended at backup time are as they were (none of
    # their prompts reached the new upstream); every other prompt reached it exactly once.
    now = {j["id"]: j for j in tables(final)["jobs"]}
    was = {j["id"]: j for j in saved["jobs"]}
    assert set(was) <= set(now)
    assert all(j["status"] in TERMINAL for j in now.values())
    assert all(successes(j) <= 1 for j in now.values())
    for job_id, old in was.items():
        new = now[job_id]
        if old["status"] in TERMINAL:
            assert digest("jobs", [new]) == digest("jobs", [old]), job_id
        else:
            assert new["status"] == "succeeded" and successes(new) == 1, new
            assert new["attempts"] == old["attempts"] + 1, (old, new)
    ended_prompts = {prompt_of(j) for j in was.values() if j["status"] in TERMINAL}
    assert not ended_prompts & set(after), sorted(ended_prompts & set(after))[:5]
    ran_after = {
        p for j in now.values()
        if j["model"] == "chat" and (p := prompt_of(j)) not in ended_prompts
    }  # fmt: skip
    assert ran_after and set(after) == ran_after
    assert set(after.values()) == {1}, [p for p, n in after.items() if n > 1][:5]
    print(f"after the restore: {len(after)} prompts reached the new upstream, each once")
