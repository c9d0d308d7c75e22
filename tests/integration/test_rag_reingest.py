"""Re-ingesting costs only what changed, on a 200-chunk document: ``genspool ingest`` against a
real ``genspool serve`` (SQLite file) embedding with the bundled MiniLM (ONNX, real).

The count of embedding calls is the server's own: the jobs of the embedding model it lists
(``GET /v1/jobs?model=…&include=request``) and the texts their requests carried. Checked: a
corpus ingested again unchanged → every source skipped, no job, no text; only mtimes touched →
the same; one paragraph in the middle of a document of at least 200 chunks rewritten → that
file updated, and the texts embedded are exactly its chunks whose text is new (1 to 3 of them,
in one job), every other chunk the same text as before; a file deleted and ``--cleanup full``
→ only that file's chunks gone (every other file's chunks the same, search finds all of them
and none of its), no text embedded.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import Server, Spawner

MODEL = "all-minilm-l6-v2"
MODELS = [{"name": MODEL, "provider": "onnx_embedding", "context_window": 256}]
STORE = "handbook"

SUBJECTS = ["The harbour crane", "A glacier", "The night train", "Every beehive", "A coral reef",
            "The old lighthouse", "The desert caravan", "A mountain village", "The river delta",
            "An orchard", "The city library", "A paper mill", "The weather station",
            "A fishing fleet", "The observatory"]  # fmt: skip
VERBS = ["moves", "shelters", "measures", "carries", "guides", "feeds", "watches", "repairs",
         "counts", "stores"]  # fmt: skip
OBJECTS = ["heavy containers", "migrating birds", "winter snow", "salted fish", "ripe apples",
           "rare manuscripts", "distant comets", "tired travellers", "fresh water", "loose stones",
           "rolls of paper", "passing ships", "summer storms", "wild honey",
           "grain sacks"]  # fmt: skip
WHEN = ["at dawn", "every spring", "before the rains", "through the long night", "in early autumn",
        "after each storm", "during the festival", "when the tide turns", "on market days",
        "in deep winter"]  # fmt: skip
#: Chapters of the handbook: about 210 chunks of MiniLM's 252 tokens (auto chunking).
CHAPTERS = 64


def handbook(rewrite: int | None = None) -> str:
    """A Markdown handbook of ``CHAPTERS`` chapters of 3 to 6 paragraphs (the same every time:
    a seeded generator); ``rewrite`` replaces that paragraph's text with another."""
    rng = random.Random(11)
    parts, n = ["# The regional handbook\n"], 0
    for c in range(CHAPTERS):
        parts.append(f"## Chapter {c}: {rng.choice(SUBJECTS).split()[-1]}s\n")
        for _ in range(rng.randint(3, 6)):
            said = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                    f" {rng.choice(WHEN)}." for _ in range(rng.randint(4, 9))]  # fmt: skip
            if n == rewrite:
                said = ["Submarines dive deep using ballast tanks filled with sea water, and"
                        " surface again by blowing them out with compressed air."]  # fmt: skip
            parts.append(f"Note {n}. " + " ".join(said) + "\n")
            n += 1
    return "\n".join(parts)


#: The paragraph rewritten: the middle one.
MIDDLE = handbook().count("\nNote ") // 2


def corpus(root: Path) -> Path:
    docs = root / "corpus"
    (docs / "sub").mkdir(parents=True)
    (docs / "handbook.md").write_text(handbook())
    (docs / "notes.txt").write_text(
        "Sourdough bread rises slowly with wild yeast and flour. Bake the loaf in a hot oven"
        " until the crust is brown and it sounds hollow when tapped.\n"
    )
    (docs / "garden.md").write_text(
        "# Gardens\n\nTomatoes grow best in sunny gardens with rich compost.\n\nWater the"
        " seedlings every morning in summer, and mulch them against the heat.\n"
    )
    (docs / "sub" / "chess.md").write_text(
        "# Chess openings\n\nThe Sicilian defence answers the king's pawn with the c-pawn, and"
        " the queen's gambit offers a pawn for the centre.\n"
    )
    return docs


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, command="serve", db=module_spawner.root / "reingest.db")


def sent(server: Server) -> tuple[int, int]:
    """The embedding jobs the server has run so far, and the texts they carried."""
    jobs = texts = 0
    after = None
    while True:
        params: dict[str, str | int] = {"model": MODEL, "include": "request", "limit": 1000}
        page = server.client.get("/v1/jobs", params=params | ({"after": after} if after else {}))
        page.raise_for_status()
        body = page.json()
        for job in body["data"]:
            given = job["request"]["body"]["input"]
            jobs, texts = jobs + 1, texts + (1 if isinstance(given, str) else len(given))
        after = body.get("next_cursor") or (body["data"][-1]["id"] if body["data"] else None)
        if not body.get("has_more") or after is None:
            return jobs, texts


def ingest(spawner: Spawner, server: Server, docs: Path, *more: str) -> dict[str, int]:
    run = spawner.run("ingest", str(docs), "--store", STORE, *more,
                      env={"GENSPOOL_API_URL": server.url}, timeout=300)  # fmt: skip
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    found: dict[str, int] = json.loads(run.stdout.strip().splitlines()[-1])
    return found


def chunks(server: Server) -> dict[str, list[str]]:
    """Each file of the store (by its filename: its source), its chunks' text in order."""
    stores = server.client.get("/v1/vector_stores", params={"limit": 100}).json()["data"]
    (store,) = [s["id"] for s in stores if s["name"] == STORE]
    listed = server.client.get(f"/v1/vector_stores/{store}/files", params={"limit": 100})
    out = {}
    for f in listed.json()["data"]:
        assert f["status"] == "completed", f
        name = server.client.get(f"/v1/files/{f['id']}").json()["filename"]
        content = server.client.get(f"/v1/vector_stores/{store}/files/{f['id']}/content")
        out[name] = [c["text"] for c in content.json()["data"]]
    return out


def search_all(server: Server, query: str) -> list[dict[str, Any]]:
    stores = server.client.get("/v1/vector_stores", params={"limit": 100}).json()["data"]
    (store,) = [s["id"] for s in stores if s["name"] == STORE]
    r = server.client.post(f"/v1/vector_stores/{store}/search",
                           json={"query": query, "max_num_results": 10_000})  # fmt: skip
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["data"]
    return hits


def test_reingest_sends_only_the_changed_chunks_of_a_200_chunk_document(
    module_spawner: Spawner, server: Server
) -> None:
    docs = corpus(module_spawner.root)
    assert ingest(module_spawner, server, docs) == {
        "num_added": 4, "num_updated": 0, "num_skipped": 0, "num_deleted": 0}  # fmt: skip
    first = chunks(server)
    assert len(first["handbook.md"]) >= 200
    jobs, texts = sent(server)
    assert texts == sum(len(c) for c in first.values())  # each chunk's text embedded once

    unchanged = ingest(module_spawner, server, docs)
    assert unchanged == {"num_added": 0, "num_updated": 0, "num_skipped": 4, "num_deleted": 0}
    assert sent(server) == (jobs, texts)  # no job, no text

    later = time.time() + 3600
    for path in docs.rglob("*"):
        os.utime(path, (later, later))
    assert ingest(module_spawner, server, docs)["num_skipped"] == 4
    assert sent(server) == (jobs, texts)

    (docs / "handbook.md").write_text(handbook(rewrite=MIDDLE))
    edited = ingest(module_spawner, server, docs)
    assert edited == {"num_added": 0, "num_updated": 1, "num_skipped": 3, "num_deleted": 0}
    now = chunks(server)
    old, new = first["handbook.md"], now["handbook.md"]
    fresh = [t for t in new if t not in set(old)]
    jobs_after, texts_after = sent(server)
    re_embedded = texts_after - texts
    assert re_embedded == len(fresh), (re_embedded, fresh)  # exactly the chunks whose text is new
    assert 1 <= re_embedded <= 3, f"{re_embedded} of {len(new)} chunks re-embedded"
    assert jobs_after - jobs == 1
    assert any("Submarines" in t for t in fresh)
    assert len(set(new) & set(old)) == len(new) - len(fresh) >= len(old) - 3
    assert {k: v for k, v in now.items() if k != "handbook.md"} == {
        k: v for k, v in first.items() if k != "handbook.md"}  # fmt: skip

    (docs / "sub" / "chess.md").unlink()
    cleaned = ingest(module_spawner, server, docs, "--cleanup", "full")
    assert cleaned == {"num_added": 0, "num_updated": 0, "num_skipped": 3, "num_deleted": 1}
    assert sent(server) == (jobs_after, texts_after)  # removing embeds nothing
    kept = chunks(server)
    assert kept == {k: v for k, v in now.items() if k != "sub/chess.md"}
    hits = search_all(server, "chess openings and pawns")
    assert len(hits) == sum(len(c) for c in kept.values())
    assert "sub/chess.md" not in {h["filename"] for h in hits}
