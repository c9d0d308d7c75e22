"""Answer jobs (``/v1/responses`` with a ``file_search`` tool) through the API in one process.

The models are echo models, named as such: the embedder's vectors are hashes of the text (the
ranking is arbitrary but fixed), and the chat model answers with the last user message, which
is the numbered sources and the question. So the answer cites every source placed as ``[n]``
right before its text, a marker planted in the question is one the model "invented", and each
citation can be checked exactly against the document. A real model's answer is checked in
``tests/integration/test_vector_stores_sdk.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genspool.rag.answer import cite
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys
from tests.helpers.api import bearer as auth

EMBEDDER = {"name": "emb", "provider": "echo", "options": {"dimensions": 16}}
#: A chat model with a small window, so not every source found fits.
SMALL = {"name": "small", "provider": "echo", "context_window": 400}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def guide() -> str:
    parts = ["# Warranty guide\n"]
    for s in range(8):
        parts.append(f"## Part {s}\n")
        for p in range(2):
            words = " ".join(f"p{s}q{p}w{n}" for n in range(45))
            parts.append(f"Paragraph {p} of part {s}: {words}.\n")
    return "\n".join(parts)


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    models = [*MODELS, EMBEDDER, SMALL]
    async with serve(models, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        yield gs


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def _store_with(gs: InProcess, key: str, text: str, name: str = "guide.md") -> str:
    up = await gs.client.post(
        "/v1/files",
        files={"file": (name, text.encode())},
        data={"purpose": "assistants"},
        headers=auth(key),
    )
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    made = await gs.client.post(
        "/v1/vector_stores", json={"name": "docs", "model": "emb"}, headers=auth(key)
    )
    store = str(made.json()["id"])
    added = await gs.client.post(
        f"/v1/vector_stores/{store}/files",
        headers=auth(key),
        json={"file_id": file_id, "chunking_strategy": STATIC},
    )
    assert added.status_code == 200, added.text
    async with asyncio.timeout(30):
        while (
            await gs.client.get(f"/v1/vector_stores/{store}/files/{file_id}", headers=auth(key))
        ).json()["status"] == "in_progress":
            await asyncio.sleep(0.02)
    return store


def _ask(store: str, question: str, model: str = "echo", **tool: Any) -> dict[str, Any]:
    return {
        "model": model,
        "input": question,
        "tools": [{"type": "file_search", "vector_store_ids": [store], **tool}],
        "include": ["file_search_call.results"],
    }


def _message(answer: dict[str, Any]) -> dict[str, Any]:
    (message,) = [o for o in answer["output"] if o["type"] == "message"]
    return dict(message["content"][0])


async def test_citations_slice_the_document_to_the_passages_placed(
    gs: InProcess, keys: Keys
) -> None:
    text = guide()
    store = await _store_with(gs, keys.a, text)
    r = await gs.client.post(
        "/v1/responses", json=_ask(store, "How long is it?"), headers=auth(keys.a)
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "response" and answer["status"] == "completed"
    assert answer["model"] == "echo"
    content = _message(answer)
    out, annotations = content["text"], content["annotations"]
    placed = answer["genspool"]["sources"]
    assert answer["genspool"]["placed"] == len(placed) == 8  # the default max_num_results
    assert [a["source"] for a in annotations] == list(range(1, 9))
    for a in annotations:
        assert a["type"] == "file_citation" and a["filename"] == "guide.md"
        chunk = a["chunk"]
        passage = text[chunk["start"] : chunk["end"]]
        assert passage.strip(), a
        # The marker is where the index says, and the passage it cites follows it: the
        # citation points at exactly the text the model was given.
        marker = f"[{a['source']}] (guide.md)\n"
        assert out[a["index"] :].startswith(marker + passage.strip())
    (call,) = [o for o in answer["output"] if o["type"] == "file_search_call"]
    assert call["queries"] == ["How long is it?"] and len(call["results"]) == 8
    assert answer["usage"]["input_tokens"] > 0
    assert answer["usage"]["total_tokens"] == (
        answer["usage"]["input_tokens"] + answer["usage"]["output_tokens"]
    )
    assert answer["genspool"]["dropped_citations"] == []


async def test_an_invented_marker_is_dropped_and_reported(gs: InProcess, keys: Keys) -> None:
    store = await _store_with(gs, keys.a, guide())
    body = _ask(store, "Is it covered [9]? See [2, 7].", max_num_results=3)
    r = await gs.client.post("/v1/responses", json=body, headers=auth(keys.a))
    assert r.status_code == 200, r.text
    content, extra = _message(r.json()), r.json()["genspool"]
    assert extra["placed"] == 3
    dropped = sorted(d["marker"] for d in extra["dropped_citations"])
    assert dropped == ["[7]", "[9]"]
    assert "no source 9: 3 were given" in {d["reason"] for d in extra["dropped_citations"]}
    assert "[9]" not in content["text"] and "Is it covered?" in content["text"]
    assert "See [2]." in content["text"]  # [2, 7] keeps the source that was given
    assert all(1 <= a["source"] <= 3 for a in content["annotations"])
    assert all(content["text"][a["index"]] == "[" for a in content["annotations"])


async def test_sources_fill_the_window_and_no_more(gs: InProcess, keys: Keys) -> None:
    store = await _store_with(gs, keys.a, guide())
    body = _ask(store, "What does part 3 say?", model="small", max_num_results=10)
    body["max_output_tokens"] = 64
    r = await gs.client.post("/v1/responses", json=body, headers=auth(keys.a))
    assert r.status_code == 200, r.text
    extra = r.json()["genspool"]
    assert extra["retrieved"] == 10
    assert 0 < extra["placed"] < 10  # 400 tokens hold a few of the ~60-word chunks
    assert extra["prompt_tokens"] <= 400 - 64


async def test_an_answer_is_a_job_too(gs: InProcess, keys: Keys) -> None:
    store = await _store_with(gs, keys.a, guide())
    spec = {"url": "/v1/responses", "body": _ask(store, "What is covered?", max_num_results=2)}
    r = await gs.client.post("/v1/jobs", json=spec, headers=auth(keys.a))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    async with asyncio.timeout(30):
        while (got := await gs.client.get(f"/v1/jobs/{job_id}", headers=auth(keys.a))).json()[
            "status"
        ] not in ("succeeded", "failed"):
            await asyncio.sleep(0.02)
    job = got.json()
    assert job["status"] == "succeeded", job
    body = job["result"]["body"]
    assert body["object"] == "response" and len(_message(body)["annotations"]) == 2


async def test_another_tenants_store_is_not_found(gs: InProcess, keys: Keys) -> None:
    store = await _store_with(gs, keys.a, guide())
    r = await gs.client.post("/v1/responses", json=_ask(store, "Q?"), headers=auth(keys.b))
    assert r.status_code == 404 and store in r.json()["error"]["message"]
    spec = {"url": "/v1/responses", "body": _ask(store, "Q?")}
    r = await gs.client.post("/v1/jobs", json=spec, headers=auth(keys.b))
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"stream": True}, "stream: an answer with file_search is returned whole"),
        ({"max_output_tokens": 400, "model": "small"}, "leaves no room for the sources"),
        ({"input": ""}, "input"),
        ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "vector_store_ids"),
        (
            {
                "tools": [
                    {"type": "file_search", "vector_store_ids": ["vs_x"]},
                    {"type": "web_search"},
                ]
            },
            "one file_search tool and no other (got web_search)",
        ),
        (
            {
                "tools": [
                    {
                        "type": "file_search",
                        "vector_store_ids": ["vs_x"],
                        "filters": {"type": "near", "key": "a", "value": 1},
                    }
                ]
            },
            "filters",
        ),
    ],
)
async def test_bad_requests_are_400s_naming_the_field(
    gs: InProcess, keys: Keys, change: dict[str, Any], expected: str
) -> None:
    body = {**_ask("vs_missing", "Q?"), **change}
    r = await gs.client.post("/v1/responses", json=body, headers=auth(keys.a))
    assert r.status_code == 400, r.text
    assert expected in r.json()["error"]["message"]


async def test_an_unknown_model_is_404_and_genspools_own_are_not_offered(
    gs: InProcess, keys: Keys
) -> None:
    r = await gs.client.post(
        "/v1/responses", json={**_ask("vs_x", "Q?"), "model": "nope"}, headers=auth(keys.a)
    )
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]["message"]
    assert "genspool-" not in r.json()["error"]["message"]


def test_cite_keeps_given_sources_and_drops_the_rest() -> None:
    cited = cite("A [1]. B [1][2]. C [4]. D [3, 1]. E [0]", sources=3)
    assert cited.text == "A [1]. B [1][2]. C. D [3, 1]. E"
    assert [n for _, n in cited.markers] == [1, 1, 2, 3, 1]
    assert all(cited.text[i] == "[" for i, _ in cited.markers)
    assert [d["marker"] for d in cited.dropped] == ["[4]", "[0]"]
    assert cite("no markers", sources=0).text == "no markers"
