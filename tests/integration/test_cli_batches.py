"""``genspool files`` and ``genspool batch`` against a real ``genspool serve`` (API, batch runner
and worker on a SQLite file) with echo models, and the Python clients' ``files`` / ``batches``
namespaces (blocking and asyncio) against the same server.

Checked: a file uploaded, listed, shown (its SHA-256), downloaded to a path and to stdout, then
deleted (and 404 after); a 50-line batch created with ``--wait`` (the progress bar's counts on
stderr, the output file's id on stdout, the file downloaded with one line per ``custom_id``);
list / get / output; a cancel of a slow batch (every line once across output and error files,
the rest ``batch_cancelled``); bad input as one line on stderr and a non-zero exit (a missing
file, an endpoint not served — its uploaded file deleted again —, an unknown batch id, a
malformed line with its number).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from genspool.client import AsyncClient, Client
from genspool.exceptions import NotFound
from tests.helpers.processes import Server, Spawner
from tests.integration.test_cli import one_line_error

CHAT = "/v1/chat/completions"
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo", "context_window": 64},
    {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": 40},
        "batching": {"max_batch_size": 4, "max_wait_ms": 1, "max_concurrency": 1},
    },
]
FILE_ID = re.compile(r"^file-[0-9a-f]+$")
BATCH_ID = re.compile(r"^batch_[0-9a-f]+$")


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, db=module_spawner.root / "cli-batches.db")


@pytest.fixture
def cli(module_spawner: Spawner, server: Server) -> Any:
    def run(*args: str, timeout: float = 60) -> Any:
        return module_spawner.run(*args, env={"GENSPOOL_API_URL": server.url}, timeout=timeout)

    return run


def line(custom_id: str, text: str, model: str = "echo") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in text.splitlines() if raw.strip()]


def answer(record: dict[str, Any]) -> str:
    return str(record["response"]["body"]["choices"][0]["message"]["content"])


def batch(server: Server, batch_id: str) -> dict[str, Any]:
    response = server.client.get(f"/v1/batches/{batch_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_files_upload_list_get_content_delete(cli: Any, tmp_path: Path) -> None:
    data = "".join(f"row {i}: données\n" for i in range(2000))
    source = tmp_path / "notes.txt"
    source.write_text(data)
    uploaded = cli("files", "upload", str(source), "--purpose", "user_data")
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = uploaded.stdout.strip()
    assert FILE_ID.match(file_id), uploaded.stdout

    listed = cli("files", "list", "--purpose", "user_data", "--json")
    assert listed.returncode == 0, listed.stderr
    assert file_id in [f["id"] for f in json.loads(listed.stdout)["data"]]
    table = cli("files", "list", "--purpose", "user_data")
    assert file_id in table.stdout and "notes.txt" in table.stdout

    shown = json.loads(cli("files", "get", file_id).stdout)
    raw = data.encode()
    assert (shown["bytes"], shown["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert (shown["filename"], shown["purpose"]) == ("notes.txt", "user_data")

    target = tmp_path / "copy.txt"
    saved = cli("files", "content", file_id, "--output", str(target))
    assert saved.returncode == 0, saved.stderr
    assert target.read_bytes() == raw and not (tmp_path / "copy.txt.part").exists()
    piped = cli("files", "content", file_id)
    assert piped.returncode == 0 and piped.stdout == data

    deleted = cli("files", "delete", file_id)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {file_id}")
    one_line_error(cli("files", "get", file_id), "HTTP 404", file_id)
    one_line_error(cli("files", "content", file_id), "HTTP 404")


def test_batch_create_wait_downloads_the_output(cli: Any, server: Server, tmp_path: Path) -> None:
    sent = [line(f"req-{i}", f"line number {i}") for i in range(50)]
    source = write_jsonl(tmp_path / "input.jsonl", sent)
    target = tmp_path / "out.jsonl"
    args = ("batch", "create", str(source), "--endpoint", CHAT, "--window", "1h", "--wait")
    result = cli(*args, "--output", str(target), "--metadata", "team=ops")
    assert result.returncode == 0, result.stderr
    output_id = result.stdout.strip()
    assert FILE_ID.match(output_id), result.stdout
    assert re.search(r"batch_[0-9a-f]+: validating", result.stderr), result.stderr
    assert "completed" in result.stderr and "50/50" in result.stderr, result.stderr
    assert "0 failed" in result.stderr and "lines/s" in result.stderr, result.stderr

    got = records(target.read_text())
    assert Counter(r["custom_id"] for r in got) == Counter(s["custom_id"] for s in sent)
    assert all(answer(r) == f"line number {r['custom_id'][4:]}" for r in got)

    listed = json.loads(cli("batch", "list", "--json").stdout)["data"]
    made = next(b for b in listed if b["output_file_id"] == output_id)
    assert BATCH_ID.match(made["id"]) and made["status"] == "completed"
    assert made["metadata"] == {"team": "ops"} and made["completion_window"] == "1h"
    assert made["id"] in cli("batch", "list").stdout

    shown = json.loads(cli("batch", "get", made["id"]).stdout)
    assert shown["request_counts"] == {"total": 50, "completed": 50, "failed": 0}
    again = cli("batch", "output", made["id"])
    assert again.returncode == 0 and again.stdout == target.read_text()
    one_line_error(cli("batch", "output", made["id"], "--errors"), "no error file", "completed")
    outputs = json.loads(cli("files", "list", "--purpose", "batch_output", "--json").stdout)
    assert output_id in [f["id"] for f in outputs["data"]]


def test_batch_cancel_keeps_finished_lines(cli: Any, server: Server, tmp_path: Path) -> None:
    sent = [line(f"c{i}", f"slow {i}", model="slow") for i in range(400)]
    source = write_jsonl(tmp_path / "slow.jsonl", sent)
    created = cli("batch", "create", str(source))
    assert created.returncode == 0, created.stderr
    batch_id = created.stdout.strip()
    assert BATCH_ID.match(batch_id), created.stdout
    Spawner.wait_until(
        lambda: batch(server, batch_id)["request_counts"]["completed"] >= 20, 60, what="lines"
    )
    cancelled = cli("batch", "cancel", batch_id)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == "cancelling", cancelled
    done = Spawner.wait_until(
        lambda: (b := batch(server, batch_id))["status"] == "cancelled" and b, 30, what="cancel"
    )
    out = records(cli("batch", "output", batch_id).stdout)
    err = records(cli("batch", "output", batch_id, "--errors").stdout)
    assert len(out) >= 20 and err, "finished lines kept, the rest listed as cancelled"
    assert Counter(r["custom_id"] for r in out + err) == Counter(s["custom_id"] for s in sent)
    assert {e["error"]["code"] for e in err} == {"batch_cancelled"}
    counts = done["request_counts"]
    assert (counts["completed"], counts["failed"]) == (len(out), len(err))


def test_bad_input_is_one_line_and_non_zero(cli: Any, server: Server, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "ok.jsonl", [line("a", "x")])
    one_line_error(cli("batch", "create", str(tmp_path / "nope.jsonl")), "nope.jsonl", "no such")
    one_line_error(cli("files", "upload", str(tmp_path)), "not a file")
    before = len(server.client.get("/v1/files", params={"purpose": "batch"}).json()["data"])
    refused = cli("batch", "create", str(source), "--endpoint", "/v1/nothing")
    one_line_error(refused, "HTTP 400", "endpoint", "/v1/nothing")
    after = len(server.client.get("/v1/files", params={"purpose": "batch"}).json()["data"])
    assert after == before, "the file uploaded for a refused batch is deleted again"
    one_line_error(
        cli("batch", "create", str(source), "--window", "forever"), "HTTP 400", "forever"
    )
    one_line_error(cli("batch", "create", str(source), "-o", "x.jsonl"), "--output needs --wait")
    for command in ("get", "cancel", "output"):
        one_line_error(cli("batch", command, "batch_0000"), "HTTP 404", "batch_0000")

    malformed = tmp_path / "bad.jsonl"
    malformed.write_text(json.dumps(line("a", "x")) + "\n{not json\n")
    failed = cli("batch", "create", str(malformed), "--wait")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert re.search(r"error: batch batch_[0-9a-f]+ failed: line 2: ", failed.stderr), failed.stderr


def test_the_sync_client_pages_and_streams(server: Server, tmp_path: Path) -> None:
    with Client(server.url) as client:
        made = [
            client.files.create(io.BytesIO(b"%d\n" % i), purpose="user_data", filename=f"{i}.txt")
            for i in range(5)
        ]
        listed = [f.id for f in client.files.list(purpose="user_data", limit=2, order="asc")]
        assert [f.id for f in made] == [i for i in listed if i in {f.id for f in made}]
        first = client.files.page(purpose="user_data", limit=2)
        assert first.has_more and len(first.data) == 2 and first.last_id == first.data[-1].id
        sink = io.BytesIO()
        assert client.files.content(made[3].id, sink) == 2 and sink.getvalue() == b"3\n"
        assert client.files.delete(made[3].id)
        with pytest.raises(NotFound):
            client.files.retrieve(made[3].id)
        missing = tmp_path / "partial.txt"
        with pytest.raises(NotFound):
            client.files.content(made[3].id, missing)
        assert not missing.exists() and not (tmp_path / "partial.txt.part").exists()


async def test_the_async_client_runs_a_batch(server: Server, tmp_path: Path) -> None:
    sent = [line(f"a{i}", f"async {i}") for i in range(10)]
    source = write_jsonl(tmp_path / "async.jsonl", sent)
    seen: list[str] = []
    async with AsyncClient(server.url) as client:
        uploaded = await client.files.create(source, purpose="batch")
        assert uploaded.filename == "async.jsonl" and uploaded.bytes == source.stat().st_size
        made = await client.batches.create(uploaded.id, endpoint=CHAT, completion_window="60s")
        done = await client.batches.wait(
            made.id, timeout=60, poll_s=0.1, on_update=lambda b: seen.append(b.status)
        )
        assert done.status == "completed" and seen[-1] == "completed"
        assert done.request_counts.total == 10 and done.output_file_id is not None
        target = tmp_path / "async-out.jsonl"
        assert await client.files.content(done.output_file_id, target) > 0
        ids = [r["custom_id"] for r in records(target.read_text())]
        assert sorted(ids) == sorted(s["custom_id"] for s in sent)
        listed = [b.id async for b in client.batches.list(limit=1)]
        assert made.id in listed and len(listed) == len(set(listed))
        assert (await client.batches.retrieve(made.id)).to_dict()["id"] == made.id
