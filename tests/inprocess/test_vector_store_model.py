"""A vector store records the embedding model and the dimensions its vectors were made with, and
keeps them: ``POST /v1/vector_stores/{id}`` with the store's own ``model`` is a no-op, another
served embedding model is refused with a 400 naming the store, both models and both sizes (a
model whose card does not declare its size is asked with one embedding job), an unknown model
is refused as at create; and a model that now makes vectors of another size than the store
holds fails the file being ingested, naming both sizes, while the store keeps answering.

The API in one process (memory store) with echo embedding models, named as such: their vectors
are hashes of the text (16 or 8 floats, by config), so nothing here is semantic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genspool.backends import open_storage
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth

STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def echo_embedder(name: str, dimensions: int) -> dict[str, Any]:
    return {"name": name, "provider": "echo", "options": {"dimensions": dimensions}}


#: ``emb`` the stores' model; ``emb8`` another size; ``twin`` another model of the same size.
EMBEDDERS = [echo_embedder("emb", 16), echo_embedder("emb8", 8), echo_embedder("twin", 16)]


def text(topic: str) -> bytes:
    return "\n\n".join(
        f"{topic} paragraph {n}: " + " ".join(f"{topic}{n}w{i}" for i in range(30))
        for n in range(6)
    ).encode()


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve([*MODELS, *EMBEDDERS], worker=True, retry=FAST_RETRY,
                     key_cache_s=0.0) as gs:  # fmt: skip
        yield gs


async def _store(gs: InProcess, key: str, model: str = "emb") -> dict[str, Any]:
    r = await gs.client.post("/v1/vector_stores", json={"name": "docs", "model": model},
                             headers=auth(key))  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _ingest(gs: InProcess, key: str, store: str, name: str, data: bytes) -> dict[str, Any]:
    up = await gs.client.post("/v1/files", files={"file": (name, data)},
                              data={"purpose": "assistants"}, headers=auth(key))  # fmt: skip
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    r = await gs.client.post(f"/v1/vector_stores/{store}/files", headers=auth(key),
                             json={"file_id": file_id, "chunking_strategy": STATIC})  # fmt: skip
    assert r.status_code == 200, r.text
    async with asyncio.timeout(30):
        while True:
            got = await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}",
                                      headers=auth(key))  # fmt: skip
            if got.json()["status"] != "in_progress":
                return dict(got.json())
            await asyncio.sleep(0.02)


async def _jobs_of(gs: InProcess, key: str, model: str) -> int:
    r = await gs.client.get("/v1/jobs", params={"model": model, "limit": 1000}, headers=auth(key))
    assert r.status_code == 200, r.text
    return len(r.json()["data"])


async def test_the_same_model_is_a_no_op_and_another_is_refused_naming_both_sizes(
    gs: InProcess,
) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    store = (await _store(gs, keys.a))["id"]
    done = await _ingest(gs, keys.a, store, "guide.txt", text("guide"))
    assert done["status"] == "completed", done
    path = f"/v1/vector_stores/{store}"

    same = await gs.client.post(path, json={"model": "emb", "name": "renamed"},
                                headers=auth(keys.a))  # fmt: skip
    assert same.status_code == 200, same.text
    assert (same.json()["model"], same.json()["dimensions"]) == ("emb", 16)
    assert same.json()["name"] == "renamed"

    jobs = await _jobs_of(gs, keys.a, "emb8")
    other = await gs.client.post(path, json={"model": "emb8", "name": "other"},
                                 headers=auth(keys.a))  # fmt: skip
    assert other.status_code == 400, other.text
    error = other.json()["error"]
    message = error["message"]
    assert error["param"] == "model"
    assert store in message and "create a new vector store with model emb8" in message
    assert "emb (16 dimensions)" in message and "emb8 makes 8 dimensions" in message
    # Its size: from its card when the service is given cards' sizes, else one embedding job.
    assert await _jobs_of(gs, keys.a, "emb8") - jobs <= 1

    twin = await gs.client.post(path, json={"model": "twin"}, headers=auth(keys.a))
    assert twin.status_code == 400  # the same size is still another model's vectors
    assert "emb (16 dimensions)" in twin.text and "twin makes 16 dimensions" in twin.text

    unknown = await gs.client.post(path, json={"model": "nope"}, headers=auth(keys.a))
    assert unknown.status_code == 400
    assert "'nope' is not a served embedding model" in unknown.text

    after = (await gs.client.get(path, headers=auth(keys.a))).json()
    assert (after["model"], after["dimensions"], after["name"]) == ("emb", 16, "renamed")
    found = await gs.client.post(f"{path}/search", json={"query": "guide paragraph 2"},
                                 headers=auth(keys.a))  # fmt: skip
    assert found.status_code == 200 and found.json()["data"]
    assert (await gs.client.post(path, json={"model": "emb8"},
                                 headers=auth(keys.b))).status_code == 404  # fmt: skip


async def test_a_store_with_nothing_embedded_yet_names_its_models_size_too(
    gs: InProcess,
) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    made = await _store(gs, keys.a)
    assert made["dimensions"] is None
    r = await gs.client.post(f"/v1/vector_stores/{made['id']}", json={"model": "emb8"},
                             headers=auth(keys.a))  # fmt: skip
    assert r.status_code == 400
    assert "emb (16 dimensions)" in r.text and "emb8 makes 8 dimensions" in r.text


async def test_a_model_now_making_another_size_fails_the_file_naming_both() -> None:
    """The same store under two configs of its model (the memory store shared by name, as a
    restart with a changed models file would find it): 16 floats, then 8."""
    url = f"memory://model-size-{uuid.uuid4().hex[:8]}"
    try:
        async with serve([*MODELS, echo_embedder("emb", 16)], url=url, worker=True,
                         retry=FAST_RETRY, key_cache_s=0.0) as gs:  # fmt: skip
            keys: Keys = await make_keys(gs.services.keys)
            store = (await _store(gs, keys.a))["id"]
            first = await _ingest(gs, keys.a, store, "old.txt", text("old"))
            assert first["status"] == "completed", first
        async with serve([*MODELS, echo_embedder("emb", 8)], url=url, worker=True,
                         retry=FAST_RETRY, key_cache_s=0.0) as gs:  # fmt: skip
            second = await _ingest(gs, keys.a, store, "new.txt", text("new"))
            assert second["status"] == "failed"
            assert second["last_error"] == {
                "code": "embedding_failed",
                "message": "embedding model emb made 8 dimensions; the store holds 16",
            }
            held = (await gs.client.get(f"/v1/vector_stores/{store}", headers=auth(keys.a))).json()
            assert held["dimensions"] == 16 and held["file_counts"]["completed"] == 1
    finally:
        storage = open_storage(url)
        await storage.connect()
        await storage.drop()
        await storage.close()
