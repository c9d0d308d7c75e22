"""No part of another tenant's vector store is reachable: besides the store, its files, their
chunks and search (``test_vector_stores.py``), its file batches, attribute updates, sources
(which would say whether it holds a document's bytes) and their cleanup (which would delete its
files) are 404 to another tenant, and leave the store as it was; a tenant's own store never
answers with the other's chunks, and the other's files cannot be put into it. ``/v1/responses``
with a ``file_search`` tool is ``test_answers.py``'s.

The API in one process (memory store) with an echo embedding model, named as such: its vectors
are hashes of the text, so a chunk's own text finds it with score 1.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth

EMBEDDER = {"name": "emb", "provider": "echo", "options": {"dimensions": 16}}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def text(topic: str) -> bytes:
    return "\n\n".join(
        f"{topic} paragraph {n}: " + " ".join(f"{topic}{n}w{i}" for i in range(30))
        for n in range(6)
    ).encode()


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve([*MODELS, EMBEDDER], worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        yield gs


async def _upload(gs: InProcess, key: str, name: str, data: bytes) -> str:
    up = await gs.client.post("/v1/files", files={"file": (name, data)},
                              data={"purpose": "assistants"}, headers=auth(key))  # fmt: skip
    assert up.status_code == 200, up.text
    return str(up.json()["id"])


async def _settled(gs: InProcess, key: str, store: str, file_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            got = await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}",
                                      headers=auth(key))  # fmt: skip
            if got.json()["status"] != "in_progress":
                return dict(got.json())
            await asyncio.sleep(0.02)


async def _store_of(gs: InProcess, key: str, source: str, data: bytes) -> tuple[str, str, str]:
    """A store holding one document ingested by its source name, in a file batch of its own
    too: (store, file, batch)."""
    made = await gs.client.post("/v1/vector_stores", json={"name": "own", "model": "emb"},
                                headers=auth(key))  # fmt: skip
    store = str(made.json()["id"])
    file_id = await _upload(gs, key, source, data)
    r = await gs.client.post(f"/v1/vector_stores/{store}/sources", headers=auth(key), json={
        "source": source, "file_id": file_id, "attributes": {"owner": "a"},
        "chunking_strategy": STATIC})  # fmt: skip
    assert r.json()["outcome"] == "added", r.text
    assert (await _settled(gs, key, store, file_id))["status"] == "completed"
    other = await _upload(gs, key, "extra.txt", text("extra"))
    batch = await gs.client.post(
        f"/v1/vector_stores/{store}/file_batches", headers=auth(key),
        json={"file_ids": [other], "chunking_strategy": STATIC},
    )  # fmt: skip
    assert batch.status_code == 200, batch.text
    await _settled(gs, key, store, other)
    return store, file_id, str(batch.json()["id"])


async def _state(gs: InProcess, key: str, store: str) -> dict[str, Any]:
    """Everything a's store shows: itself, its files, their chunks."""
    got = (await gs.client.get(f"/v1/vector_stores/{store}", headers=auth(key))).json()
    got.pop("last_active_at", None)
    files = (await gs.client.get(f"/v1/vector_stores/{store}/files", headers=auth(key))).json()
    chunks = {}
    for f in files["data"]:
        content = await gs.client.get(f"/v1/vector_stores/{store}/files/{f['id']}/content",
                                      headers=auth(key))  # fmt: skip
        chunks[f["id"]] = [c["text"] for c in content.json()["data"]]
    return {"store": got, "files": files["data"], "chunks": chunks}


async def test_no_part_of_another_tenants_store_is_reachable(gs: InProcess) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    data = text("secret")
    store, file_id, batch = await _store_of(gs, keys.a, "docs/secret.txt", data)
    before = await _state(gs, keys.a, store)
    assert before["chunks"][file_id]
    theirs = await _upload(gs, keys.b, "mine.txt", text("mine"))
    sha = hashlib.sha256(data).hexdigest()
    base = f"/v1/vector_stores/{store}"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"{base}/files?filter=completed", None),
        ("POST", f"{base}/files", {"file_id": theirs}),
        ("POST", f"{base}/files/{file_id}", {"attributes": {"owner": "b"}}),
        ("POST", f"{base}/file_batches", {"file_ids": [theirs]}),
        ("GET", f"{base}/file_batches/{batch}", None),
        ("GET", f"{base}/file_batches/{batch}/files", None),
        ("POST", f"{base}/file_batches/{batch}/cancel", None),
        ("POST", f"{base}/sources", {"source": "docs/secret.txt", "sha256": sha}),
        ("POST", f"{base}/sources", {"source": "docs/secret.txt", "file_id": theirs}),
        ("POST", f"{base}/sources/cleanup", {"keep": []}),
        ("POST", f"{base}/search", {"query": before["chunks"][file_id][0],
                                    "filters": {"type": "eq", "key": "owner", "value": "a"}}),
        ("GET", f"/v1/files/{file_id}", None),
        ("GET", f"/v1/files/{file_id}/content", None),
    ]  # fmt: skip
    for method, path, body in calls:
        r = await gs.client.request(method, path, json=body, headers=auth(keys.b))
        assert r.status_code == 404, (method, path, r.text)
        assert "secret" not in r.text  # no text of a's leaks into the error
    for method, path, _ in calls:  # a reaches the same routes (the 404s are not typos)
        if method == "GET":
            r = await gs.client.get(path, headers=auth(keys.a))
            assert r.status_code == 200, (path, r.text)
    after = await _state(gs, keys.a, store)
    assert after == before  # nothing b asked for changed a's store

    listed = await gs.client.get("/v1/vector_stores", params={"limit": 100}, headers=auth(keys.b))
    assert store not in {s["id"] for s in listed.json()["data"]}
    mine = await gs.client.post("/v1/vector_stores", json={"model": "emb"}, headers=auth(keys.b))
    own = mine.json()["id"]
    added = await gs.client.post(f"/v1/vector_stores/{own}/files", headers=auth(keys.b),
                                 json={"file_id": theirs, "chunking_strategy": STATIC})  # fmt: skip
    assert added.status_code == 200
    await _settled(gs, keys.b, own, theirs)
    for body in ({"file_ids": [file_id]}, {"files": [{"file_id": file_id}]}):
        r = await gs.client.post(f"/v1/vector_stores/{own}/file_batches", json=body,
                                 headers=auth(keys.b))  # fmt: skip
        assert r.status_code == 400 and "no file" in r.text, r.text
    r = await gs.client.post(f"/v1/vector_stores/{own}/sources", headers=auth(keys.b),
                             json={"source": "stolen.txt", "file_id": file_id})  # fmt: skip
    assert r.status_code == 400 and "no file" in r.text, r.text  # as for a file never made
    # b's own store, asked for a's chunk by its exact text, answers with b's chunks only.
    hits = await gs.client.post(f"/v1/vector_stores/{own}/search", headers=auth(keys.b),
                                json={"query": before["chunks"][file_id][0],
                                      "max_num_results": 10_000})  # fmt: skip
    assert hits.status_code == 200
    found = hits.json()["data"]
    assert found and {h["file_id"] for h in found} == {theirs}
    assert not [h for h in found if "secret" in h["content"][0]["text"]]
    admin = await gs.client.get(base, headers=auth(keys.admin))  # an admin reaches every tenant
    assert admin.status_code == 200 and admin.json()["id"] == store
