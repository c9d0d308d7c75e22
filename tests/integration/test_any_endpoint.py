"""Any OpenAI endpoint a remote model declares, end to end: a real ``genspool serve`` (SQLite
file, files beside it) with ``openai`` models pointed at the fault server
(:mod:`genspool.testing.faults`, a real HTTP server on loopback, no faults drawn here), two
tenants' keys made by the real ``genspool keys`` CLI.

Checked: each endpoint through ``POST /v1/jobs`` (completions, responses, moderations, rerank
stored as the remote answered); speech kept as a file of the job's tenant whose content is the
bytes the remote sent; images' ``b64_json`` replaced by file ids; a transcription reading its
audio from the caller's file (sent as multipart), and refused at the door with another
tenant's; a bad body per endpoint refused naming the field; an undeclared endpoint refused
naming what the model serves; a batch of ``/v1/completions`` lines (and one with a bad line and
one naming another tenant's file, each failed with its line number); a fan-out branch to
``/v1/moderations``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genspool.testing._endpoints import png, speech_bytes
from genspool.testing.faults import FaultServer
from tests.helpers.processes import Server, Spawner
from tests.integration.test_files_api import create_key

ENDPOINTS = [
    "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/moderations",
    "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/rerank",
]  # fmt: skip
ENDED = ("succeeded", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with FaultServer() as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "endpoints.db"
    return path


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, upstream: str, keys: dict[str, str]) -> Server:
    remote = {"provider": "openai", "options": {"base_url": upstream},
              "batching": {"max_wait_ms": 0}}  # fmt: skip
    models = [
        {"name": "remote", **remote, "endpoints": ENDPOINTS},
        {"name": "chat-only", **remote},  # the provider's default: chat and embeddings
    ]
    return module_spawner.server(models, command="serve", db=db)


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    return {
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
    }


@pytest.fixture(scope="module")
def a(server: Server, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=_auth(keys["a"]), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def b(server: Server, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=_auth(keys["b"]), timeout=30) as client:
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: httpx.Client, url: str, body: dict[str, Any], expect: int = 202) -> Any:
    response = client.post("/v1/jobs", json={"url": url, "body": {"model": "remote", **body}})
    assert response.status_code == expect, response.text
    return response.json()


def result(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[str, Any]:
    """Submit, wait for the job to succeed; its id and stored result body."""
    job = wait(client, f"/v1/jobs/{submit(client, url, body)['id']}", ENDED)
    assert job["status"] == "succeeded", job
    return job["id"], job["result"]["body"]


def wait(client: httpx.Client, path: str, until: tuple[str, ...], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = client.get(path)
        assert got.status_code == 200, got.text
        if got.json()["status"] in until:
            return got.json()
        assert time.monotonic() < deadline, f"{path} still {got.json()['status']}"
        time.sleep(0.05)


def upload(client: httpx.Client, name: str, data: bytes, purpose: str = "user_data") -> str:
    made = client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert made.status_code == 200, made.text
    file_id: str = made.json()["id"]
    return file_id


def content(client: httpx.Client, file_id: str) -> bytes:
    got = client.get(f"/v1/files/{file_id}/content")
    assert got.status_code == 200, got.text
    return got.content


# -- JSON in, JSON out -------------------------------------------------------------------------


def test_completions_pass_through(a: httpx.Client) -> None:
    _, body = result(a, "/v1/completions", {"prompt": "once upon a time", "max_tokens": 5})
    assert body["object"] == "text_completion" and body["model"] == "remote"
    assert body["choices"][0]["text"] == "once upon a time"


def test_responses_pass_through(a: httpx.Client) -> None:
    _, body = result(a, "/v1/responses", {"input": "hello there"})
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == "hello there"


def test_moderations_pass_through(a: httpx.Client) -> None:
    _, body = result(a, "/v1/moderations", {"input": ["I will kill it", "a nice day"]})
    assert [r["flagged"] for r in body["results"]] == [True, False]


def test_rerank_passes_through(a: httpx.Client) -> None:
    docs = ["a red car", "the quick red fox", "blue sky"]
    _, body = result(a, "/v1/rerank", {"query": "red fox", "documents": docs, "top_n": 2})
    assert [r["index"] for r in body["results"]] == [1, 0]


# -- binary outputs kept as files --------------------------------------------------------------


def test_speech_is_kept_as_a_file_of_the_jobs_tenant(a: httpx.Client, b: httpx.Client) -> None:
    job_id, body = result(a, "/v1/audio/speech", {"input": "good morning", "voice": "alloy"})
    sent = speech_bytes("good morning")
    assert body["object"] == "audio.speech" and body["content_type"] == "audio/mpeg"
    assert body["bytes"] == len(sent) and body["file_id"].startswith("file-")
    assert content(a, body["file_id"]) == sent
    record = a.get(f"/v1/files/{body['file_id']}").json()
    assert (record["filename"], record["purpose"]) == (f"{job_id}.mp3", "user_data")
    assert b.get(f"/v1/files/{body['file_id']}/content").status_code == 404


def test_images_b64_is_replaced_by_file_ids(a: httpx.Client) -> None:
    job_id, body = result(
        a, "/v1/images/generations", {"prompt": "a cat", "n": 2, "response_format": "b64_json"}
    )
    assert all("b64_json" not in item for item in body["data"])
    for i, item in enumerate(body["data"]):
        assert item["content_type"] == "image/png" and item["bytes"] == len(png(i))
        assert content(a, item["file_id"]) == png(i)
        assert a.get(f"/v1/files/{item['file_id']}").json()["filename"] == f"{job_id}-{i}.png"


# -- an input file -----------------------------------------------------------------------------


def test_transcription_reads_the_callers_file(a: httpx.Client) -> None:
    audio = speech_bytes("some words") * 50 + b"\r\n"  # ends as a form's separator would
    file_id = upload(a, "meeting.mp3", audio)
    body = {"file": file_id, "language": "en", "timestamp_granularities": ["word"]}
    _, answer = result(a, "/v1/audio/transcriptions", body)
    assert answer["text"] == f"{len(audio)} bytes of audio from meeting.mp3"


def test_transcription_of_another_tenants_file_is_refused(a: httpx.Client, b: httpx.Client) -> None:
    theirs = upload(a, "private.mp3", b"ID3 secret")
    error = submit(b, "/v1/audio/transcriptions", {"file": theirs}, expect=400)["error"]
    assert error["param"] == "file" and theirs in error["message"]
    unknown = submit(a, "/v1/audio/transcriptions", {"file": "file-nope"}, expect=400)
    assert unknown["error"]["param"] == "file"


# -- refused at the door -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
        ("/v1/responses", {}, "input"),
        ("/v1/moderations", {}, "input"),
        ("/v1/images/generations", {"n": 1}, "prompt"),
        ("/v1/audio/speech", {"voice": "alloy"}, "input"),
        ("/v1/audio/speech", {"input": "hi"}, "voice"),
        ("/v1/audio/transcriptions", {"language": "en"}, "file"),
        ("/v1/rerank", {"documents": ["x"]}, "query"),
        ("/v1/rerank", {"query": "x"}, "documents"),
        ("/v1/completions", {"prompt": "x", "stream": True}, "body.stream"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(
    a: httpx.Client, url: str, body: dict[str, Any], field: str
) -> None:
    error = submit(a, url, body, expect=400)["error"]
    assert error["param"] == field, error
    assert field in error["message"]


def test_an_undeclared_endpoint_is_refused_naming_what_the_model_serves(a: httpx.Client) -> None:
    response = a.post(
        "/v1/jobs", json={"url": "/v1/completions", "body": {"model": "chat-only", "prompt": "x"}}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "url" and "/v1/chat/completions" in error["message"]


# -- batches and fan-outs ----------------------------------------------------------------------


def batch(client: httpx.Client, endpoint: str, lines: list[dict[str, Any]]) -> Any:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    source = upload(client, "input.jsonl", data, purpose="batch")
    made = client.post(
        "/v1/batches",
        json={"input_file_id": source, "endpoint": endpoint, "completion_window": "24h"},
    )
    assert made.status_code == 200, made.text
    return wait(client, f"/v1/batches/{made.json()['id']}", ("completed", "failed"), 60)


def line(n: int, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": f"req-{n}", "method": "POST", "url": url,
            "body": {"model": "remote", **body}}  # fmt: skip


def test_a_batch_of_completions(a: httpx.Client) -> None:
    done = batch(a, "/v1/completions", [line(i, "/v1/completions", {"prompt": f"p{i}"})
                                        for i in range(3)])  # fmt: skip
    assert done["status"] == "completed", done
    out = [json.loads(raw) for raw in content(a, done["output_file_id"]).splitlines()]
    texts = {o["custom_id"]: o["response"]["body"]["choices"][0]["text"] for o in out}
    assert texts == {f"req-{i}": f"p{i}" for i in range(3)}


def test_a_batch_line_is_checked_with_its_line_number(a: httpx.Client, b: httpx.Client) -> None:
    bad = [line(1, "/v1/completions", {"prompt": "ok"}), line(2, "/v1/completions", {})]
    errors = batch(a, "/v1/completions", bad)["errors"]["data"]
    assert [(e["line"], e["param"]) for e in errors] == [(2, "prompt")]
    theirs = upload(a, "a.mp3", b"ID3 audio")
    url = "/v1/audio/transcriptions"
    errors = batch(b, url, [line(1, url, {"file": theirs})])["errors"]["data"]
    assert [(e["line"], e["param"]) for e in errors] == [(1, "file")]


def test_a_fanout_branch_to_moderations(a: httpx.Client) -> None:
    chat = {"model": "remote", "messages": [{"role": "user", "content": "hi"}]}
    branches = [
        {"name": "mod", "url": "/v1/moderations", "body": {"model": "remote", "input": "kill"}},
        {"name": "chat", "body": chat},
    ]
    made = a.post("/v1/fanouts", json={"branches": branches})
    assert made.status_code == 202, made.text
    done = wait(a, f"/v1/jobs/{made.json()['id']}", ENDED)
    assert done["status"] == "succeeded", done
    by_name = {br["name"]: br for br in done["result"]["body"]["branches"]}
    assert by_name["mod"]["status"] == "succeeded", by_name["mod"]
    assert by_name["mod"]["result"]["results"][0]["flagged"] is True
