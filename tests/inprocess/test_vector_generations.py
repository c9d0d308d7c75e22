"""Never lose the old version: a document ingested again by its source name while the embedding
model fails keeps answering from its old chunks, and a resume flips to the new ones. The API in
one process (memory store); the embedding model is remote, the fault server (a real HTTP
server on loopback, scripted to fail every call; its vectors are hashes of the text)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from genspool.testing.faults import FaultServer
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth

STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def guide(version: str) -> bytes:
    return "\n\n".join(
        f"Paragraph {n} says {version} " + " ".join(f"{version}{n}w{i}" for i in range(30))
        for n in range(8)
    ).encode()


@pytest.fixture
def upstream() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def gs(upstream: FaultServer) -> AsyncIterator[InProcess]:
    femb = {"name": "femb", "provider": "openai", "max_attempts": 1,
            "options": {"base_url": upstream.url + "/v1"}, "breaker": {"enabled": False},
            "batching": {"max_wait_ms": 0}}  # fmt: skip
    async with serve([*MODELS, femb], worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        yield gs


async def _ingest(gs: InProcess, key: str, store: str, data: bytes) -> dict[str, Any]:
    path = f"/v1/vector_stores/{store}/sources"
    sha = hashlib.sha256(data).hexdigest()
    first = await gs.client.post(path, json={"source": "docs/guide.txt", "sha256": sha},
                                 headers=auth(key))  # fmt: skip
    assert first.status_code == 200, first.text
    if first.json()["outcome"] == "skipped":
        return dict(first.json())
    assert first.json()["outcome"] == "upload_needed"
    up = await gs.client.post("/v1/files", files={"file": ("guide.txt", data)},
                              data={"purpose": "assistants"}, headers=auth(key))  # fmt: skip
    body = {"source": "docs/guide.txt", "file_id": up.json()["id"], "chunking_strategy": STATIC}
    r = await gs.client.post(path, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _settled(gs: InProcess, key: str, store: str, file_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            r = await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}", headers=auth(key))
            if r.json()["status"] != "in_progress":
                return dict(r.json())
            await asyncio.sleep(0.02)


async def _probe(gs: InProcess, key: str, store: str) -> set[str]:
    """Which version the store answers from (every hit's text names its version)."""
    r = await gs.client.post(f"/v1/vector_stores/{store}/search", headers=auth(key),
                             json={"query": "Paragraph 3", "max_num_results": 100})  # fmt: skip
    assert r.status_code == 200, r.text
    texts = [h["content"][0]["text"] for h in r.json()["data"]]
    assert texts
    return {v for t in texts for v in ("old", "new") if f" {v}" in f" {t}"}


async def test_a_failed_reingest_keeps_the_old_version_and_a_resume_flips(
    gs: InProcess, upstream: FaultServer
) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    made = await gs.client.post("/v1/vector_stores", json={"model": "femb"}, headers=auth(keys.a))
    store = made.json()["id"]
    added = await _ingest(gs, keys.a, store, guide("old"))
    assert added["outcome"] == "added"
    file_id = added["file"]["id"]
    assert (await _settled(gs, keys.a, store, file_id))["status"] == "completed"
    assert await _probe(gs, keys.a, store) == {"old"}
    assert (await _ingest(gs, keys.a, store, guide("old")))["outcome"] == "skipped"

    upstream.script([{"model": "femb", "outcome": "error", "status": 500}])  # every call fails
    updated = await _ingest(gs, keys.a, store, guide("new"))
    assert updated["outcome"] == "updated" and updated["file"]["id"] == file_id
    path = f"/v1/vector_stores/{store}/files/{file_id}"
    while (await gs.client.get(path, headers=auth(keys.a))).json()["status"] == "in_progress":
        assert await _probe(gs, keys.a, store) == {"old"}  # during: the old version
        await asyncio.sleep(0.01)  # the memory store never suspends: let the worker run
    failed = await _settled(gs, keys.a, store, file_id)
    assert failed["status"] == "failed" and failed["last_error"]["code"] == "embedding_failed"
    assert await _probe(gs, keys.a, store) == {"old"}  # after: still the old version

    upstream.script([])  # the model is back: ingest again, and it flips
    resumed = await _ingest(gs, keys.a, store, guide("new"))
    assert resumed["outcome"] == "updated"
    assert (await _settled(gs, keys.a, store, file_id))["status"] == "completed"
    assert await _probe(gs, keys.a, store) == {"new"}
    content = await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}/content",
                                  headers=auth(keys.a))  # fmt: skip
    assert all(" new " in c["text"] for c in content.json()["data"])


async def test_cleanup_full_removes_only_the_sources_not_seen(gs: InProcess) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    made = await gs.client.post(
        "/v1/vector_stores", json={"model": "echo-emb"}, headers=auth(keys.a)
    )
    assert made.status_code == 400  # no such embedding model: named in the error
    assert "not a served embedding model" in made.text
    made = await gs.client.post("/v1/vector_stores", json={"model": "femb"}, headers=auth(keys.a))
    store = made.json()["id"]
    ids = {}
    for name in ("a.txt", "b.txt", "c.txt"):
        data = guide(name[0])
        up = await gs.client.post("/v1/files", files={"file": (name, data)},
                                  data={"purpose": "assistants"}, headers=auth(keys.a))  # fmt: skip
        r = await gs.client.post(f"/v1/vector_stores/{store}/sources", headers=auth(keys.a),
                                 json={"source": name, "file_id": up.json()["id"]})  # fmt: skip
        ids[name] = r.json()["file"]["id"]
        await _settled(gs, keys.a, store, ids[name])
    r = await gs.client.post(f"/v1/vector_stores/{store}/sources/cleanup", headers=auth(keys.a),
                             json={"keep": ["a.txt", "c.txt"]})  # fmt: skip
    assert r.json()["num_deleted"] == 1
    listed = await gs.client.get(f"/v1/vector_stores/{store}/files", headers=auth(keys.a))
    assert {f["id"] for f in listed.json()["data"]} == {ids["a.txt"], ids["c.txt"]}
