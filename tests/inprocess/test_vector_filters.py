"""A selective filter on the embedded (exact) store returns ``k`` results, and a search may ask
for up to 10,000.

One store of 10,100 chunks: 100 files of 101 chunks, each file's ``part`` attribute one of 100
values, so a filter on one value matches exactly 1 % of the store (101 chunks). The query is a
chunk of another part, so the unfiltered best ten hold few of the filtered part: a filter
applied after ranking would return fewer than ten, applied before it returns ten, the part's
best ten in the whole ranking.

The API in one process (memory store) with an echo embedding model, named as such: its vectors
are hashes of the text (the same text scores 1, nothing is semantic), which is all ranking
needs here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth

EMBEDDER = {"name": "emb", "provider": "echo", "options": {"dimensions": 16}}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
FILES, NOTES = 100, 101  # 100 parts, one file each, of 101 chunks: 10,100 chunks
PART, OTHER = "p42", "p07"


def note(f: int, s: int) -> str:
    return (
        f"## Note {f}-{s}\n\nFile {f} note {s} says "
        + " ".join(f"f{f}s{s}w{i}" for i in range(12))
        + "."
    )


def notes(f: int) -> bytes:
    """A file of ``NOTES`` short sections: each one chunk (a chunk never crosses a heading)."""
    return "\n\n".join(note(f, s) for s in range(NOTES)).encode()


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve([*MODELS, EMBEDDER], worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        yield gs


async def _filled_store(gs: InProcess, key: str) -> str:
    made = await gs.client.post("/v1/vector_stores", json={"model": "emb"}, headers=auth(key))
    store = str(made.json()["id"])
    entries = []
    for f in range(FILES):
        up = await gs.client.post("/v1/files", files={"file": (f"part{f:02d}.md", notes(f))},
                                  data={"purpose": "assistants"}, headers=auth(key))  # fmt: skip
        assert up.status_code == 200, up.text
        entries.append({"file_id": up.json()["id"], "attributes": {"part": f"p{f:02d}"},
                        "chunking_strategy": STATIC})  # fmt: skip
    r = await gs.client.post(f"/v1/vector_stores/{store}/file_batches", json={"files": entries},
                             headers=auth(key))  # fmt: skip
    assert r.status_code == 200, r.text
    path = f"/v1/vector_stores/{store}/file_batches/{r.json()['id']}"
    async with asyncio.timeout(120):
        while (batch := (await gs.client.get(path, headers=auth(key))).json())["status"] == (
            "in_progress"
        ):
            await asyncio.sleep(0.05)
    assert batch["file_counts"]["completed"] == FILES, batch
    return store


async def _search(gs: InProcess, key: str, store: str, **body: Any) -> list[dict[str, Any]]:
    r = await gs.client.post(f"/v1/vector_stores/{store}/search", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_a_one_percent_filter_returns_k_and_10000_results_come_back(gs: InProcess) -> None:
    keys: Keys = await make_keys(gs.services.keys)
    store = await _filled_store(gs, keys.a)
    eq = {"type": "eq", "key": "part", "value": PART}
    query = note(7, 50)  # a chunk of part p07

    everything = await _search(gs, keys.a, store, query=query, max_num_results=10_000)
    assert len(everything) == 10_000  # the cap, of 10,100 chunks
    assert everything[0]["attributes"]["part"] == OTHER
    assert everything[0]["score"] == pytest.approx(1.0)
    matching = await _search(gs, keys.a, store, query=query, max_num_results=10_000, filters=eq)
    assert len(matching) == NOTES  # all it matches: 101 of 10,100 chunks, 1 %
    assert len(matching) * 100 == FILES * NOTES
    assert {h["attributes"]["part"] for h in matching} == {PART}

    best = await _search(gs, keys.a, store, query=query, max_num_results=10, filters=eq)
    assert len(best) == 10 and {h["attributes"]["part"] for h in best} == {PART}
    assert len([h for h in everything[:10] if h["attributes"]["part"] == PART]) < 10
    # The ten best of the part are the part's first ten in the whole ranking.
    ranked = [h for h in everything if h["attributes"]["part"] == PART]
    assert len(ranked) >= 10
    assert [h["content"][0]["text"] for h in best] == [h["content"][0]["text"] for h in ranked[:10]]
    assert [h["score"] for h in best] == [h["score"] for h in matching[:10]]

    both = {"type": "and", "filters": [eq, {"type": "eq", "key": "part", "value": OTHER}]}
    assert await _search(gs, keys.a, store, query=query, filters=both) == []
    either = {"type": "or", "filters": [eq, {"type": "eq", "key": "part", "value": OTHER}]}
    two = await _search(gs, keys.a, store, query=query, max_num_results=10_000, filters=either)
    assert len(two) == 2 * NOTES and two[0]["attributes"]["part"] == OTHER
    too_many = await gs.client.post(f"/v1/vector_stores/{store}/search", headers=auth(keys.a),
                                    json={"query": query, "max_num_results": 10_001})  # fmt: skip
    assert too_many.status_code == 400 and "max_num_results" in too_many.text
