"""Vector stores through the official ``openai`` SDK, unchanged, against a real ``genspool
serve`` (SQLite file) embedding with the bundled MiniLM (ONNX, real): ``vector_stores.create``,
``files.upload_and_poll`` of a PDF, ``create_and_poll`` with attributes, ``search`` with a
compound filter, statuses and ``file_counts`` as OpenAI's move, another tenant kept out; and
``responses.create`` with a ``file_search`` tool answered by the bundled SmolLM2 (llama.cpp,
real), its citations pointing into the documents."""

from __future__ import annotations

import io
from pathlib import Path

import openai
import pytest

from tests.helpers.documents import pdf_bytes
from tests.helpers.processes import Server, Spawner
from tests.integration.test_files_api import create_key

MODELS = [
    {
        "name": "all-minilm-l6-v2", "provider": "onnx_embedding", "context_window": 256,
        "batching": {"max_batch_size": 64, "max_wait_ms": 5, "max_concurrency": 1},
    },
    {"name": "smollm2-135m-instruct", "provider": "llama_cpp", "context_window": 2048},
]  # fmt: skip

TOPICS = {
    "rockets": ["Rocket engines burn liquid oxygen and kerosene to reach orbit.",
                "The launch tower releases the rocket at ignition."],
    "baking": ["Sourdough bread rises slowly with wild yeast and flour.",
               "Bake the loaf in a hot oven until the crust is brown."],
    "gardens": ["Tomatoes grow best in sunny gardens with rich compost.",
                "Water the seedlings every morning in summer."],
}  # fmt: skip


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "vectors.db"
    return path


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    return {
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
    }


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, keys: dict[str, str]) -> Server:
    return module_spawner.server(MODELS, command="serve", db=db)


def sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_the_sdk_round_trip(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    store = a.vector_stores.create(name="handbook")
    assert store.status == "completed" and store.file_counts.total == 0
    pdf = pdf_bytes([TOPICS["rockets"], TOPICS["baking"]])
    done = a.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("handbook.pdf", io.BytesIO(pdf)), poll_interval_ms=100
    )
    assert done.status == "completed", done.last_error
    text = "# Gardens\n\n" + "\n\n".join(TOPICS["gardens"])
    md = a.files.create(file=("gardens.md", text.encode()), purpose="assistants")
    again = a.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=md.id, attributes={"kind": "guide", "year": 2024},
        poll_interval_ms=100,
    )  # fmt: skip
    assert again.status == "completed" and again.attributes == {"kind": "guide", "year": 2024}
    counts = a.vector_stores.retrieve(store.id).file_counts
    assert (counts.completed, counts.total, counts.in_progress) == (2, 2, 0)

    found = a.vector_stores.search(store.id, query="how do rockets get to space?")
    top = found.data[0]
    assert top.filename == "handbook.pdf" and "Rocket" in top.content[0].text
    pages = {h.model_extra["chunk"]["page"] for h in found.data if h.filename == "handbook.pdf"}
    assert pages <= {1, 2} and 1 in pages
    flt = {"type": "and", "filters": [{"type": "eq", "key": "kind", "value": "guide"},
                                      {"type": "gte", "key": "year", "value": 2020}]}  # fmt: skip
    guides = a.vector_stores.search(store.id, query="how do rockets get to space?", filters=flt)
    assert guides.data and {h.filename for h in guides.data} == {"gardens.md"}
    none = a.vector_stores.search(store.id, query="rockets", filters={
        "type": "eq", "key": "kind", "value": "novel"})  # fmt: skip
    assert none.data == []

    listed = a.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in listed.data} == {done.id, md.id}
    b = sdk(server, keys["b"])
    with pytest.raises(openai.NotFoundError):
        b.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        b.vector_stores.search(store.id, query="rockets")
    assert not [s for s in b.vector_stores.list() if s.id == store.id]
    deleted = a.vector_stores.delete(store.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        a.vector_stores.retrieve(store.id)


def test_a_file_batch_polls_to_completed(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    store = a.vector_stores.create(name="batch")
    ids = [a.files.create(file=(f"{t}.txt", " ".join(lines).encode()), purpose="assistants").id
           for t, lines in TOPICS.items()]  # fmt: skip
    batch = a.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, poll_interval_ms=100
    )
    assert batch.status == "completed" and batch.file_counts.completed == 3
    files = a.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert {f.id for f in files.data} == set(ids)
    hits = a.vector_stores.search(store.id, query="bread and yeast", max_num_results=1)
    assert hits.data[0].filename == "baking.txt"


def test_an_answer_cites_the_documents_it_was_given(
    server: Server, keys: dict[str, str]
) -> None:
    a = sdk(server, keys["a"])
    store = a.vector_stores.create(name="answers")
    texts = {f"{t}.txt": " ".join(lines) for t, lines in TOPICS.items()}
    ids = {
        a.files.create(file=(name, text.encode()), purpose="assistants").id: name
        for name, text in texts.items()
    }
    batch = a.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=list(ids), poll_interval_ms=100
    )
    assert batch.status == "completed"
    answer = a.responses.create(
        model="smollm2-135m-instruct",
        input="What do rocket engines burn?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}],
        max_output_tokens=48,
        temperature=0,
        include=["file_search_call.results"],
    )
    assert answer.status in ("completed", "incomplete") and answer.output_text.strip()
    call, message = answer.output
    assert call.type == "file_search_call" and call.results
    assert call.results[0].filename == "rockets.txt"  # MiniLM ranks the right document first
    extra = answer.to_dict()["genspool"]
    assert extra["placed"] == 2 and extra["sources"][0]["filename"] == "rockets.txt"
    assert extra["prompt_tokens"] + 48 <= 2048
    assert answer.usage is not None and answer.usage.output_tokens > 0
    content = message.content[0]
    # Whatever the small model cites, each kept citation names a source it was given and
    # slices that document to the passage that was in its prompt.
    for cited in content.annotations:
        assert content.text[cited.index] == "["
        chunk = cited.to_dict()["chunk"]
        assert cited.filename == ids[cited.file_id]
        passage = texts[cited.filename][chunk["start"] : chunk["end"]]
        assert passage and passage in {r.text for r in call.results}
    for dropped in extra["dropped_citations"]:
        assert dropped["marker"] not in content.text
