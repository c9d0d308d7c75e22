"""Vector stores through the API in one process (memory store; an echo embedding model, named
as such: its vectors are hashes of the text, so the same text finds itself with score 1 and
nothing is semantic): ingest, chunk offsets and headings, search with filters applied before
ranking, re-ingest that embeds only changed chunks, tenancy, and the errors a caller gets."""

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


def document(edit: int | None = None) -> bytes:
    """A Markdown guide of 12 sections of 3 paragraphs; ``edit`` changes one paragraph."""
    parts = ["# Guide\n"]
    for s in range(12):
        parts.append(f"## Section {s}\n")
        for p in range(3):
            words = " ".join(f"w{s}x{p}y{n}" for n in range(40))
            if edit == s * 3 + p:
                words = words.replace("y7 ", "edited ")
            parts.append(f"Paragraph {p} of section {s}: {words}.\n")
    return "\n".join(parts).encode()


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve([*MODELS, EMBEDDER], worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        yield gs


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def _upload(gs: InProcess, key: str, name: str, data: bytes) -> str:
    r = await gs.client.post(
        "/v1/files", files={"file": (name, data)}, data={"purpose": "assistants"},
        headers=auth(key),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def _store(gs: InProcess, key: str) -> str:
    r = await gs.client.post("/v1/vector_stores", json={"name": "docs", "model": "emb"},
                             headers=auth(key))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["dimensions"] is None and r.json()["file_counts"]["total"] == 0
    return str(r.json()["id"])


async def _add(gs: InProcess, key: str, store: str, file_id: str, **extra: Any) -> dict[str, Any]:
    body = {"file_id": file_id, "chunking_strategy": STATIC, **extra}
    r = await gs.client.post(f"/v1/vector_stores/{store}/files", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["openai-poll-after-ms"]
    async with asyncio.timeout(30):
        while True:
            got = await gs.client.get(
                f"/v1/vector_stores/{store}/files/{file_id}", headers=auth(key)
            )
            if got.json()["status"] != "in_progress":
                return dict(got.json())
            await asyncio.sleep(0.02)


async def _search(gs: InProcess, key: str, store: str, **body: Any) -> list[dict[str, Any]]:
    r = await gs.client.post(f"/v1/vector_stores/{store}/search", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_a_document_is_chunked_embedded_and_found(gs: InProcess, keys: Keys) -> None:
    store = await _store(gs, keys.a)
    file_id = await _upload(gs, keys.a, "guide.md", document())
    done = await _add(gs, keys.a, store, file_id, attributes={"lang": "en", "year": 2024})
    assert done["status"] == "completed", done
    assert done["attributes"] == {"lang": "en", "year": 2024} and done["usage_bytes"] > 0
    content = await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}/content",
                                  headers=auth(keys.a))  # fmt: skip
    texts = [c["text"] for c in content.json()["data"]]
    assert len(texts) >= 12
    hits = await _search(gs, keys.a, store, query=texts[5], max_num_results=3)
    top = hits[0]
    assert top["content"][0]["text"] == texts[5] and top["score"] == pytest.approx(1.0)
    assert top["filename"] == "guide.md" and top["attributes"]["lang"] == "en"
    source = document().decode()
    assert source[top["chunk"]["start"] : top["chunk"]["end"]].strip() == texts[5].strip()
    assert top["chunk"]["headings"][0] == "Guide"
    listed = await gs.client.get("/v1/vector_stores", headers=auth(keys.a))
    (shown,) = listed.json()["data"]
    assert shown["file_counts"] == {"in_progress": 0, "completed": 1, "failed": 0,
                                    "cancelled": 0, "total": 1}  # fmt: skip


async def test_filters_apply_before_ranking(gs: InProcess, keys: Keys) -> None:
    store = await _store(gs, keys.a)
    sizes = {}
    for n, (lang, year) in enumerate([("en", 2019), ("fr", 2021), ("en", 2023)]):
        file_id = await _upload(gs, keys.a, f"doc{n}.md", document(edit=n))
        await _add(gs, keys.a, store, file_id, attributes={"lang": lang, "year": year})
        content = await gs.client.get(
            f"/v1/vector_stores/{store}/files/{file_id}/content", headers=auth(keys.a)
        )
        sizes[lang, year] = len(content.json()["data"])
    query = "Paragraph 1 of section 4"
    everything = await _search(gs, keys.a, store, query=query, max_num_results=10_000)
    french = await _search(gs, keys.a, store, query=query, max_num_results=10_000,
                           filters={"type": "eq", "key": "lang", "value": "fr"})  # fmt: skip
    assert french and {h["attributes"]["lang"] for h in french} == {"fr"}
    assert (
        len(french) == len(everything) // 3 + (len(everything) % 3 > 0)
        or len(french) * 3 >= len(everything) - 3
    )
    recent_en = await _search(gs, keys.a, store, query=query, max_num_results=5, filters={
        "type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"},
                                   {"type": "gte", "key": "year", "value": 2020}]})  # fmt: skip
    assert len(recent_en) == 5
    assert {(h["attributes"]["lang"], h["attributes"]["year"]) for h in recent_en} == {("en", 2023)}
    bad = await gs.client.post(
        f"/v1/vector_stores/{store}/search", headers=auth(keys.a),
        json={"query": "x", "filters": {"type": "eq", "key": "lang"}},
    )  # fmt: skip
    assert bad.status_code == 400 and "filters" in bad.text


async def test_reingest_embeds_only_what_changed(gs: InProcess, keys: Keys) -> None:
    ingester = gs.services.vector_stores.ingester  # type: ignore[union-attr]
    store = await _store(gs, keys.a)
    first = await _upload(gs, keys.a, "guide.md", document())
    await _add(gs, keys.a, store, first)
    chunks = ingester.embedded
    assert chunks >= 12
    again = await _add(gs, keys.a, store, first)  # the same file again: its text is unchanged
    assert again["status"] == "completed" and ingester.embedded == chunks
    same = await _upload(gs, keys.a, "copy.md", document())  # the same text, another file
    await _add(gs, keys.a, store, same)
    assert ingester.embedded == chunks  # every chunk's vector came from the cache
    edited = await _upload(gs, keys.a, "edited.md", document(edit=20))
    await _add(gs, keys.a, store, edited)
    assert 1 <= ingester.embedded - chunks <= 3


async def test_another_tenants_store_is_404_everywhere(gs: InProcess, keys: Keys) -> None:
    store = await _store(gs, keys.a)
    file_id = await _upload(gs, keys.a, "guide.md", document())
    await _add(gs, keys.a, store, file_id)
    for method, path, body in [
        ("GET", f"/v1/vector_stores/{store}", None),
        ("POST", f"/v1/vector_stores/{store}", {"name": "mine"}),
        ("DELETE", f"/v1/vector_stores/{store}", None),
        ("GET", f"/v1/vector_stores/{store}/files", None),
        ("GET", f"/v1/vector_stores/{store}/files/{file_id}", None),
        ("GET", f"/v1/vector_stores/{store}/files/{file_id}/content", None),
        ("DELETE", f"/v1/vector_stores/{store}/files/{file_id}", None),
        ("POST", f"/v1/vector_stores/{store}/search", {"query": "x"}),
    ]:
        r = await gs.client.request(method, path, json=body, headers=auth(keys.b))
        assert r.status_code == 404, (method, path, r.text)
    assert (await gs.client.get("/v1/vector_stores", headers=auth(keys.b))).json()["data"] == []
    theirs = await _store(gs, keys.b)  # nor can b add a's file to its own store
    r = await gs.client.post(f"/v1/vector_stores/{theirs}/files", json={"file_id": file_id},
                             headers=auth(keys.b))  # fmt: skip
    assert r.status_code == 400 and "no file" in r.text


async def test_removing_a_file_removes_its_chunks_only(gs: InProcess, keys: Keys) -> None:
    store = await _store(gs, keys.a)
    keep = await _upload(gs, keys.a, "keep.md", document(edit=1))
    gone = await _upload(gs, keys.a, "gone.md", document(edit=2))
    for f in (keep, gone):
        await _add(gs, keys.a, store, f)
    r = await gs.client.delete(f"/v1/vector_stores/{store}/files/{gone}", headers=auth(keys.a))
    assert r.json() == {"id": gone, "object": "vector_store.file.deleted", "deleted": True}
    hits = await _search(gs, keys.a, store, query="Paragraph", max_num_results=10_000)
    assert hits and {h["file_id"] for h in hits} == {keep}


async def test_bad_requests_say_what_is_wrong(gs: InProcess, keys: Keys) -> None:
    store = await _store(gs, keys.a)
    cases = [
        ("/v1/vector_stores", {"model": "echo-nope"}, "not a served embedding model"),
        ("/v1/vector_stores", {"name": "x", "nmae": 1}, "body.nmae"),
        (f"/v1/vector_stores/{store}/files", {"file_id": "file-nope"}, "no file"),
        (
            f"/v1/vector_stores/{store}/search",
            {"query": "x", "max_num_results": 0},
            "max_num_results",
        ),
        (f"/v1/vector_stores/{store}/search", {"query": "  "}, "query"),
    ]
    for path, body, words in cases:
        r = await gs.client.post(path, json=body, headers=auth(keys.a))
        assert r.status_code == 400, (body, r.text)
        assert words in r.text, r.text
    f = await _upload(gs, keys.a, "g.md", document())
    bad = {"file_id": f, "chunking_strategy": {"type": "static", "static": {
        "max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}}  # fmt: skip
    r = await gs.client.post(f"/v1/vector_stores/{store}/files", json=bad, headers=auth(keys.a))
    assert r.status_code == 400 and "100 to 4096" in r.text
