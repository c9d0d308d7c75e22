"""``genspool ingest``, ``search`` and ``stores`` against a real ``genspool serve`` (SQLite file)
embedding with the bundled MiniLM (ONNX, real), and a real local HTTP site (stdlib
``http.server`` in a thread).

Checked: a generated corpus (Markdown, text, HTML and a PDF) ingested; ingested again unchanged
→ all skipped and no embedding text sent (the server's own jobs of the embedding model, read with
their requests, are the signal); only mtimes touched → all skipped, none sent; one paragraph of
a long document edited → 1 updated and at most 3 texts embedded; a file deleted with
``--cleanup full`` → ``num_deleted`` 1 and its chunks gone from search; a site with robots.txt, a
page that 500s then recovers, a 429 with Retry-After, a page that times out, a 404 and a page
robots.txt forbids → the run completes, the three that recover are added and each failure is
listed with its reason (non-zero exit); ``search`` (table and ``--json``) finds the right
document; ``stores`` list/create/get/delete; the clients' store methods (blocking and asyncio);
bad input as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from genspool.client import AsyncClient, Client
from tests.helpers.documents import pdf_bytes
from tests.helpers.processes import Server, Spawner
from tests.integration.test_cli import one_line_error

MODEL = "all-minilm-l6-v2"
MODELS = [{"name": MODEL, "provider": "onnx_embedding", "context_window": 256}]

TOPICS = [
    "Volcanoes erupt when magma rises through cracks in the crust of the earth.",
    "Honeybees dance to tell their hive where the flowers with nectar are.",
    "Glaciers carve deep valleys as they slide slowly down the mountains.",
    "Lighthouses guide ships past rocks with a bright rotating lamp at night.",
    "Coral reefs shelter thousands of species of fish in warm shallow seas.",
    "Owls hunt at night and can turn their heads almost all the way around.",
    "Deserts receive very little rain and their sand dunes move with the wind.",
    "Penguins cannot fly but they swim fast through the cold southern ocean.",
]


def _long_guide(edit: bool = False) -> str:
    """A Markdown document of about 30 chunks; ``edit`` rewrites one paragraph in its middle."""
    parts = []
    for n in range(60):
        topic = TOPICS[n % len(TOPICS)]
        text = f"Paragraph {n}. {topic} " * 3
        if edit and n == 30:
            text = (
                "Paragraph 30. Submarines dive deep using ballast tanks filled with sea water. " * 3
            )
        if n % 10 == 0:
            parts.append(f"## Part {n // 10}")
        parts.append(text.strip())
    return "# The field guide\n\n" + "\n\n".join(parts) + "\n"


def _corpus(root: Path) -> Path:
    docs = root / "corpus"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text(_long_guide())
    (docs / "notes.txt").write_text(
        "Sourdough bread rises slowly with wild yeast and flour. Bake the loaf in a hot oven"
        " until the crust is brown and it sounds hollow when tapped.\n"
    )
    (docs / "garden.html").write_text(_html("Gardens", [
        "Tomatoes grow best in sunny gardens with rich compost and regular watering.",
        "Water the seedlings every morning in summer, and mulch them against the heat.",
        "Pick the fruit when it is red and slightly soft, and store it out of the fridge.",
    ]))  # fmt: skip
    (docs / "manual.pdf").write_bytes(pdf_bytes([
        ["Rocket engines burn liquid oxygen and kerosene to reach orbit."],
        ["The launch tower releases the rocket at ignition."],
    ]))  # fmt: skip
    (docs / "sub" / "chess.md").write_text(
        "# Chess openings\n\nThe Sicilian defence answers the king's pawn with the c-pawn, and"
        " the queen's gambit offers a pawn for the centre.\n"
    )
    return docs


def _html(title: str, paragraphs: list[str]) -> str:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body><main><article>"
        f"<h1>{title}</h1>\n{body}</article></main></body></html>"
    )


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, command="serve", db=module_spawner.root / "ingest.db")


@pytest.fixture
def cli(module_spawner: Spawner, server: Server) -> Any:
    def run(*args: str, timeout: float = 180) -> Any:
        return module_spawner.run(*args, env={"GENSPOOL_API_URL": server.url}, timeout=timeout)

    return run


def embedded_texts(server: Server) -> int:
    """How many texts the server's embedding jobs have carried so far (searches included)."""
    total, after = 0, None
    while True:
        params: dict[str, str | int] = {"model": MODEL, "include": "request", "limit": 1000}
        page = server.client.get("/v1/jobs", params=params | ({"after": after} if after else {}))
        page.raise_for_status()
        body = page.json()
        for job in body["data"]:
            given = job["request"]["body"]["input"]
            total += 1 if isinstance(given, str) else len(given)
        after = body.get("next_cursor") or (body["data"][-1]["id"] if body["data"] else None)
        if not body.get("has_more") or after is None:
            return total


def counts(result: Any) -> dict[str, int]:
    assert "Traceback" not in result.stderr, result.stderr
    found: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def _search(cli: Any, store: str, query: str, *more: str) -> list[dict[str, Any]]:
    found = cli("search", store, query, "--json", *more)
    assert found.returncode == 0, found.stderr
    hits: list[dict[str, Any]] = json.loads(found.stdout)["data"]
    return hits


# -- a directory -------------------------------------------------------------------------------


def test_a_directory_ingested_again_sends_only_what_changed(
    cli: Any, server: Server, module_spawner: Spawner
) -> None:
    docs = _corpus(module_spawner.root)
    first = cli("ingest", str(docs), "--store", "docs", "--attr", "team=field")
    assert first.returncode == 0, first.stderr
    assert counts(first) == {"num_added": 5, "num_updated": 0, "num_skipped": 0,
                             "num_deleted": 0}  # fmt: skip

    before = embedded_texts(server)
    again = cli("ingest", str(docs), "--store", "docs")
    assert again.returncode == 0, again.stderr
    assert counts(again) == {"num_added": 0, "num_updated": 0, "num_skipped": 5,
                             "num_deleted": 0}  # fmt: skip
    assert embedded_texts(server) == before

    later = time.time() + 3600
    for path in docs.rglob("*"):
        os.utime(path, (later, later))
    touched = cli("ingest", str(docs), "--store", "docs")
    assert counts(touched)["num_skipped"] == 5 and embedded_texts(server) == before

    (docs / "guide.md").write_text(_long_guide(edit=True))
    edited = cli("ingest", str(docs), "--store", "docs")
    assert edited.returncode == 0, edited.stderr
    assert counts(edited) == {"num_added": 0, "num_updated": 1, "num_skipped": 4,
                              "num_deleted": 0}  # fmt: skip
    assert 1 <= embedded_texts(server) - before <= 3
    hits = _search(cli, "docs", "submarines and ballast tanks", "-k", "1")
    assert hits[0]["filename"] == "guide.md" and "Submarines" in hits[0]["content"][0]["text"]

    assert _search(cli, "docs", "chess openings", "-k", "1")[0]["filename"] == "sub/chess.md"
    (docs / "sub" / "chess.md").unlink()
    cleaned = cli("ingest", str(docs), "--store", "docs", "--cleanup", "full")
    assert cleaned.returncode == 0, cleaned.stderr
    assert counts(cleaned) == {"num_added": 0, "num_updated": 0, "num_skipped": 4,
                               "num_deleted": 1}  # fmt: skip
    names = {h["filename"] for h in _search(cli, "docs", "chess openings", "-k", "50")}
    assert "sub/chess.md" not in names and "guide.md" in names


def test_search_finds_the_right_document(cli: Any, server: Server) -> None:
    hits = _search(cli, "docs", "how do rockets reach orbit?", "-k", "3")
    assert hits[0]["filename"] == "manual.pdf" and hits[0]["chunk"]["page"] == 1
    assert _search(cli, "docs", "baking bread with yeast", "-k", "1")[0]["filename"] == "notes.txt"
    tomato = _search(cli, "docs", "growing tomatoes", "-k", "1")[0]
    assert tomato["filename"] == "garden.html" and tomato["attributes"] == {"team": "field"}

    flt = json.dumps({"type": "eq", "key": "team", "value": "nobody"})
    assert _search(cli, "docs", "rockets", "--filter", flt) == []
    table = cli("search", "docs", "how do rockets reach orbit?", "-k", "2")
    assert table.returncode == 0 and "manual.pdf" in table.stdout and "score" in table.stdout


# -- a site ------------------------------------------------------------------------------------


class _Site(BaseHTTPRequestHandler):
    """A small site with the faults a crawl meets: each path's answers, in order."""

    hits: dict[str, int] = {}
    base = ""

    def do_GET(self) -> None:
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        page = _PAGES.get(self.path)
        if self.path == "/robots.txt":
            self._send(200, "User-agent: *\nDisallow: /private/\n", "text/plain")
        elif self.path == "/sitemap.xml":
            urls = "".join(f"<url><loc>{self.base}{p}</loc></url>" for p in _SITEMAP)
            xml = f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
            self._send(200, xml, "application/xml")
        elif self.path == "/flaky.html" and n == 1:
            self._send(500, "oops", "text/plain")
        elif self.path == "/busy.html" and n == 1:
            self._send(429, "slow down", "text/plain", {"Retry-After": "1"})
        elif self.path == "/slow.html":
            time.sleep(3)
            self._send(200, "late", "text/plain")
        elif page is not None:
            self._send(200, page, "text/html; charset=utf-8")
        else:
            self._send(404, "no such page", "text/plain")

    def _send(
        self, status: int, text: str, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        self.send_response(status)
        for key, value in {"Content-Type": kind, "Content-Length": str(len(data)),
                           **(headers or {})}.items():  # fmt: skip
            self.send_header(key, value)
        self.end_headers()
        # The crawler may have given up on a slow page already.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


_PAGES = {
    "/lighthouses.html": _html("Lighthouses", [
        "Lighthouses guide ships past dangerous rocks with a bright rotating lamp at night.",
        "The keeper trimmed the wick and wound the clockwork that turned the great lens.",
        "Today most lighthouses are automatic and run on electricity and solar panels.",
    ]),
    "/flaky.html": _html("Volcanoes", [
        "Volcanoes erupt when magma rises through cracks in the crust of the earth.",
        "Lava flows can bury villages, and ash clouds can stop aeroplanes for days.",
        "Scientists watch the ground swell with satellites to warn people in time.",
    ]),
    "/busy.html": _html("Honeybees", [
        "Honeybees dance to tell their hive where the flowers with nectar are.",
        "A waggle dance points toward the food, its length saying how far it is.",
        "The colony keeps warm in winter by clustering and shivering its muscles.",
    ]),
    "/private/secret.html": _html("Secret", ["Nobody should crawl this page at all, ever."]),
}  # fmt: skip
_SITEMAP = ["/lighthouses.html", "/flaky.html", "/busy.html", "/slow.html", "/missing.html",
            "/private/secret.html"]  # fmt: skip


@pytest.fixture
def site() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    httpd.daemon_threads = True
    _Site.hits, _Site.base = {}, f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield _Site.base
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_site_with_faults_completes_and_lists_each_failure(cli: Any, site: str) -> None:
    run = cli("ingest", f"{site}/sitemap.xml", "--store", "site", "--page-timeout", "1",
              "--retries", "2")  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert counts(run) == {"num_added": 3, "num_updated": 0, "num_skipped": 0,
                           "num_deleted": 0}  # fmt: skip
    failed = {line.split(": ")[1] for line in run.stderr.splitlines() if line.startswith("failed:")}
    assert failed == {f"{site}/slow.html", f"{site}/missing.html", f"{site}/private/secret.html"}
    assert "3 of 6 sources failed" in run.stderr
    assert _Site.hits["/flaky.html"] == 2 and _Site.hits["/busy.html"] == 2
    assert "/private/secret.html" not in _Site.hits

    top = _search(cli, "site", "how do bees find flowers?", "-k", "1")[0]
    assert top["filename"].endswith("/busy.html")
    again = cli("ingest", f"{site}/sitemap.xml", "--store", "site", "--page-timeout", "1",
                "--retries", "0", "--cleanup", "full")  # fmt: skip
    assert counts(again) == {"num_added": 0, "num_updated": 0, "num_skipped": 3,
                             "num_deleted": 0}  # fmt: skip


# -- stores and the clients --------------------------------------------------------------------


def test_stores_commands(cli: Any) -> None:
    made = cli("stores", "create", "scratch")
    assert made.returncode == 0, made.stderr
    store_id = made.stdout.strip()
    listed = cli("stores", "list", "--json")
    assert store_id in {s["id"] for s in json.loads(listed.stdout)["data"]}
    got = cli("stores", "get", "scratch")
    assert got.returncode == 0 and store_id in got.stdout and MODEL in got.stdout
    assert cli("stores", "delete", store_id).returncode == 0
    one_line_error(cli("stores", "get", "scratch"), "no vector store named 'scratch'")


def test_the_clients_ingest_wait_and_search(server: Server) -> None:
    with Client(server.url) as client:
        store = client.create_store("client-made")
        text = b"Kites fly high when the wind blows steadily over open fields."
        added = client.ingest_source(store.id, "kites.txt", text, "kites.txt")
        assert added.outcome == "added" and added.file is not None
        ended = client.wait_files(store.id, [added.file.id], timeout=60)
        assert ended[added.file.id].status == "completed"
        again = client.ingest_source(store.id, "kites.txt", text, "kites.txt")
        assert again.outcome == "skipped"
        assert client.search(store.id, "flying kites", k=1)[0].filename == "kites.txt"
        assert store.id in {s.id for s in client.stores(limit=1)}

    async def go() -> None:
        async with AsyncClient(server.url) as client:
            assert await client.cleanup_sources(store.id, []) == 1
            assert await client.search(store.id, "flying kites") == []
            assert await client.delete_store(store.id)

    asyncio.run(go())


def test_a_failed_file_is_listed(cli: Any, module_spawner: Spawner) -> None:
    odd = module_spawner.root / "odd"
    odd.mkdir()
    (odd / "fine.txt").write_text("Rivers carry water from the hills down to the sea.\n")
    (odd / "blob.bin").write_bytes(bytes(range(256)) * 8)
    run = cli("ingest", str(odd), "--store", "odd")
    assert run.returncode != 0 and counts(run)["num_added"] == 1
    assert any(line.startswith("failed: blob.bin: ") for line in run.stderr.splitlines())


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ingest", "no/such/dir", "--store", "x"), "no/such/dir: no such directory"),
        (("ingest", ".", "--store", "x", "--cleanup", "some"), "--cleanup some: none or full"),
        (("ingest", ".", "--store", "x", "--attr", "novalue"), "--attr novalue: give KEY=VALUE"),
        (("ingest", ".", "--store", "x", "--chunk-overlap", "10"), "--chunk-overlap"),
        (("ingest", ".", "--store", "x", "--max-pages", "0"), "--max-pages 0"),
        (("search", "nowhere", "rockets"), "no vector store named 'nowhere'"),
        (("search", "docs", "rockets", "-k", "0"), "-k 0: must be from 1 to 10000"),
        (("search", "docs", "rockets", "--filter", "{bad"), "--filter is not valid JSON"),
        (("search", "docs", "rockets", "--threshold", "2"), "--threshold 2.0"),
        (("stores", "get", "vs_0123abcd"), "HTTP 404"),
    ],
)
def test_bad_input_is_one_line(cli: Any, args: tuple[str, ...], expected: str) -> None:
    one_line_error(cli(*args), expected)


def test_an_unreachable_server_is_one_line(module_spawner: Spawner) -> None:
    run = module_spawner.run("ingest", ".", "--store", "x", "--api", "http://127.0.0.1:9")
    one_line_error(run, "cannot reach genspool at http://127.0.0.1:9")
