"""The web UI's views of fan-outs, batches, pipeline runs, vector stores, prompts and drift in
a real browser: the system's headless Chromium, driven by Playwright, against a real
``genspool serve`` (SQLite file) with echo models that answer after a set latency (so that
work takes long enough to be watched), the bundled MiniLM (ONNX, real) for the vector store
and the drift samples, and a pipeline in its models file.

Checked: a batch uploaded through the page's form shows a moving progress bar (its value read
at least twice, increasing, before the end) and its output file downloads through the page; a
fan-out's branches land on the page without a reload; a pipeline run started by the page's Run
button completes with its items and output link; a vector store's search box returns results
from an ingested file, ranked by the bundled embedding model; a read-only key sees no Upload
or Cancel and a forged upload is 403. For every page: a Content-Security-Policy on every
answer under ``/ui`` and no CSP violation or script error; every request it makes goes to
loopback; no ``gsk_`` key or provider key in its DOM or in any file or fragment it loaded. A
screenshot of each view goes to a temporary directory (printed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from playwright import sync_api

from tests.helpers.browser import OpenPage, Watch, chromium, watched_pages
from tests.helpers.processes import Server, Spawner
from tests.integration.test_ui import (
    Keys,
    csrf_of,
    login,
    no_secret_in,
)

MINILM = "all-minilm-l6-v2"
MODELS: list[dict[str, Any]] = [
    {"name": MINILM, "provider": "onnx_embedding", "context_window": 256},
    {"name": "echo", "provider": "echo"},
    {"name": "steady", "provider": "echo", "options": {"latency_ms": 150},
     "batching": {"max_batch_size": 1, "max_concurrency": 1}},
    {"name": "slowpoke", "provider": "echo", "options": {"latency_ms": 2500},
     "batching": {"max_batch_size": 1}},
    {"name": "talker", "provider": "echo", "drift": {"sample_rate": 1.0, "embed_model": MINILM}},
]  # fmt: skip
PIPELINE = {
    "name": "shout", "description": "Echo every review, slowly.",
    "inputs": {"suffix": {"default": "!"}},
    "source": {"items": [{"id": f"r{i}", "text": f"review {i}"} for i in range(12)]},
    "key": "{{item.id}}",
    "steps": [{"id": "say", "model": "steady", "prompt": "{{item.text}}{{inputs.suffix}}"}],
    "sink": [{"jsonl": {"fields": {"id": "{{item.id}}", "said": "{{steps.say}}"}}}],
}  # fmt: skip
DOCS = {
    "rockets.md": "# Rockets\n\nRocket engines burn liquid oxygen and kerosene to reach orbit."
    " The launch tower releases the rocket at ignition.",
    "baking.md": "# Baking\n\nSourdough bread rises slowly with wild yeast and flour. Bake the"
    " loaf in a hot oven until the crust is brown.",
}
BATCH_LINES = 40


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    config = module_spawner.root / "views.yaml"
    config.write_text(yaml.safe_dump({"models": MODELS, "pipelines": [PIPELINE]}, sort_keys=False))
    return module_spawner.server(config, db=module_spawner.root / "views.db")


@pytest.fixture(scope="module")
def keys(server: Server) -> Keys:
    made = server.client.post("/v1/keys", json={"tenant": "default", "scopes": ["admin"]})
    assert made.status_code == 201, made.text
    admin = made.json()["key"]
    server.client.headers["Authorization"] = f"Bearer {admin}"
    reader = server.client.post("/v1/keys", json={"tenant": "default", "scopes": ["read"]})
    assert reader.status_code == 201, reader.text
    return Keys(admin, reader.json()["key"])


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-views-screenshots")
    print(f"screenshots of the UI's views: {path}")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: sync_api.Browser) -> Iterator[OpenPage]:
    with watched_pages(browser, accept_downloads=True) as new:
        yield new


def batch_input(n: int) -> bytes:
    body = {"model": "steady", "max_tokens": 8}
    rows = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {**body, "messages": [{"role": "user", "content": f"line {i}"}]}}
            for i in range(n)]  # fmt: skip
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def shoot(page: sync_api.Page, shots: Path, name: str, keys: Keys) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    no_secret_in(page.content(), keys, page.url)


def check_served(page: sync_api.Page, watch: Watch, keys: Keys) -> None:
    """Every file and fragment under /ui the pages loaded, fetched again: no secret in any."""
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    served = {u for u in watch.requests if "/ui" in u and "/ui/files/" not in u}
    assert served
    for url in served:
        no_secret_in(httpx.get(url, cookies=cookies, timeout=30).text, keys, url)


def test_a_batch_uploaded_through_the_page_shows_a_moving_bar_and_its_output_downloads(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/batches")
    page.set_input_files(
        "#batch-file",
        files=[{"name": "reviews.jsonl", "mimeType": "application/jsonl",
                "buffer": batch_input(BATCH_LINES)}],
    )  # fmt: skip
    page.select_option("#batch-endpoint", "/v1/chat/completions")
    page.fill("#batch-window", "1h")
    page.screenshot(path=str(shots / "batches-upload-form.png"), full_page=True)
    page.click("#upload-batch")
    page.wait_for_url(re.compile(re.escape(server.url) + r"/ui/batches/batch_[0-9a-z]+$"))
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = page.get_attribute("#batch-detail", "data-status")
        value = int(page.get_attribute("#batch-progress", "aria-valuenow") or 0)
        if not seen or value != seen[-1]:
            seen.append(value)
            if 0 < value < BATCH_LINES and len(seen) == 3:
                page.screenshot(path=str(shots / "batch-running.png"), full_page=True)
        if status in ("completed", "failed", "cancelled"):
            break
        page.wait_for_timeout(100)
    assert page.get_attribute("#batch-detail", "data-status") == "completed", seen
    assert seen == sorted(seen) and seen[-1] == BATCH_LINES, seen
    moving = [v for v in seen if 0 < v < BATCH_LINES]
    assert len(moving) >= 2, f"the bar did not move while the batch ran: {seen}"
    assert page.get_attribute("#batch-progress", "data-failed") == "0"
    shoot(page, shots, "batch-completed", keys)
    with page.expect_download() as downloading:
        page.click("#output-file")
    download = downloading.value
    rows = [orjson.loads(line) for line in Path(download.path()).read_bytes().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == sorted(f"line-{i}" for i in range(BATCH_LINES))
    assert all(r["response"]["status_code"] == 200 for r in rows)
    page.goto(f"{server.url}/ui/batches")
    shoot(page, shots, "batches", keys)
    assert page.get_attribute(".bar[aria-valuenow]", "aria-valuenow") == str(BATCH_LINES)
    check_served(page, watch, keys)


def test_a_fanouts_branches_land_on_the_page_without_a_reload(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    branches = [
        {"name": name, "body": {"model": model, "max_tokens": 8,
                                "messages": [{"role": "user", "content": f"hello from {name}"}]}}
        for name, model in (("quick", "echo"), ("steady", "steady"), ("late", "slowpoke"))
    ]  # fmt: skip
    made = server.client.post("/v1/fanouts", json={"branches": branches})
    assert made.status_code == 202, made.text
    parent = made.json()["id"]
    page, watch = open_page()
    login(page, server, keys.admin, f"/ui/fanouts/{parent}")
    page.evaluate("window.stillTheSamePage = true")
    navigated = len(watch.navigations)
    page.wait_for_selector("tr[data-branch=quick][data-status=succeeded]", timeout=20_000)
    late = page.get_attribute("tr[data-branch=late]", "data-status")
    if late != "succeeded":  # the slow branch, caught before it landed
        page.screenshot(path=str(shots / "fanout-running.png"), full_page=True)
    page.wait_for_selector("#fanout-branches[data-status=succeeded]", timeout=30_000)
    statuses = page.locator("tr.branch").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses == ["succeeded"] * 3
    assert "hello from late" in page.inner_text("tr[data-branch=late] td.output")
    assert page.evaluate("window.stillTheSamePage") is True
    assert len(watch.navigations) == navigated  # the branches landed without a reload
    shoot(page, shots, "fanout", keys)
    page.goto(f"{server.url}/ui/fanouts")
    assert page.locator(f"#fanout-{parent}").count() == 1
    shoot(page, shots, "fanouts", keys)
    check_served(page, watch, keys)


def test_a_pipeline_run_from_the_run_button(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/pipelines/shout")
    page.fill("#input-suffix", "?!")
    page.click("#start-run")
    page.wait_for_url(
        re.compile(re.escape(server.url) + r"/ui/pipelines/shout/runs/run_[0-9a-f]+$")
    )
    page.wait_for_selector("#run-detail[data-status=completed]", timeout=60_000)
    assert page.get_attribute("#run-progress", "aria-valuenow") == "12"
    page.wait_for_selector("#items-table tr.item >> nth=11", timeout=10_000)
    assert "review 7?!" in page.inner_text("#items-table")
    shoot(page, shots, "pipeline-run", keys)
    with page.expect_download() as downloading:
        page.click(".output-file")
    rows = [orjson.loads(x) for x in Path(downloading.value.path()).read_bytes().splitlines()]
    assert sorted(r["said"] for r in rows) == sorted(f"review {i}?!" for i in range(12))
    for path, name in (("/ui/pipelines", "pipelines"), ("/ui/pipelines/shout", "pipeline")):
        page.goto(f"{server.url}{path}")
        shoot(page, shots, name, keys)
    check_served(page, watch, keys)


def _ingested_store(server: Server) -> tuple[str, dict[str, str]]:
    store = server.client.post("/v1/vector_stores", json={"name": "handbook", "model": MINILM})
    assert store.status_code == 200, store.text
    store_id, ids = store.json()["id"], {}
    for name, text in DOCS.items():
        up = server.client.post(
            "/v1/files", files={"file": (name, text.encode())}, data={"purpose": "assistants"}
        )
        ids[name] = up.json()["id"]
        added = server.client.post(
            f"/v1/vector_stores/{store_id}/files", json={"file_id": ids[name]}
        )
        assert added.status_code == 200, added.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        counts = server.client.get(f"/v1/vector_stores/{store_id}").json()["file_counts"]
        if counts["completed"] == len(DOCS):
            return store_id, ids
        assert counts["failed"] == 0, counts
        time.sleep(0.2)
    raise AssertionError(f"the files were not ingested: {counts}")


def test_a_vector_stores_search_box_finds_an_ingested_file_by_meaning(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    store_id, ids = _ingested_store(server)
    page, watch = open_page()
    login(page, server, keys.admin, f"/ui/vector-stores/{store_id}")
    for name, file_id in ids.items():
        row = page.locator(f"#vf-{file_id}")
        assert row.get_attribute("data-status") == "completed" and name in row.inner_text()
        assert int(row.locator("[data-k=chunks]").inner_text()) >= 1
    page.fill("#search-q", "how does a spacecraft get launched into space?")
    page.click("#search-button")
    page.wait_for_selector("#search-results li.hit")
    hits = page.locator("#search-results li.hit")
    first = hits.first
    assert first.get_attribute("data-file") == ids["rockets.md"]
    assert "rockets.md" in first.inner_text() and "kerosene" in first.inner_text()
    scores = [float(s) for s in hits.evaluate_all("hs => hs.map(h => h.dataset.score)")]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    shoot(page, shots, "vector-store-search", keys)
    page.goto(f"{server.url}/ui/vector-stores")
    assert page.locator(f"#store-{store_id}").count() == 1
    shoot(page, shots, "vector-stores", keys)
    check_served(page, watch, keys)


def test_prompts_and_drift_views(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    for text in ("Hello {{name}}", "Hi {{name}}, in a {{tone}} tone"):
        body = {"id": "greet", "kind": "text", "template": text, "labels": ["production"]}
        assert server.client.post("/v1/prompts", json=body).status_code == 201
    for i in range(24):
        server.chat("talker", "tell me about " + "rockets " * (i % 5 + 1) + str(i))
    window = {"baseline_start": "-1h", "baseline_end": "now", "current_start": "-1h",
              "current_end": "now"}  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report = server.client.get("/v1/drift", params={"model": "talker", **window}).json()
        if report["current"]["samples"] >= 24:
            break
        time.sleep(0.25)
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/prompts")
    assert page.locator("#prompt-greet").count() == 1
    shoot(page, shots, "prompts", keys)
    page.click("#prompt-greet a")
    page.wait_for_url(f"{server.url}/ui/prompts/greet")
    page.fill("#label-name", "staging")
    page.fill("#label-version", "1")
    page.click("#move-label")
    page.wait_for_url(f"{server.url}/ui/prompts/greet")
    staging = page.locator("tr[data-label=staging] [data-k=version]")
    assert staging.inner_text() == "1"
    assert page.locator("#audit-table tr.audit").count() == 5  # 2 versions, 2 + 1 label moves
    shoot(page, shots, "prompt", keys)
    page.goto(f"{server.url}/ui/drift")
    for field, value in window.items():
        page.fill(f"#{field}", value)
    page.click("#drift-report")
    page.wait_for_selector("#drift-result")
    assert page.get_attribute("#drift-result", "data-verdict") == "no_drift"
    assert page.locator("#drift-charts svg").count() == 3
    # The charts are painted by the stylesheet (no inline style): the current window blue.
    fill = page.eval_on_selector("#drift-charts .drift-current", "e => getComputedStyle(e).fill")
    assert fill == "rgb(43, 123, 214)", fill
    shoot(page, shots, "drift", keys)
    check_served(page, watch, keys)


def test_a_read_only_key_has_no_upload_or_cancel_and_a_forged_upload_is_403(
    server: Server, keys: Keys, open_page: OpenPage, shots: Path
) -> None:
    page, _ = open_page()
    login(page, server, keys.reader, "/ui/batches")
    assert page.locator("#batch-upload, #upload-batch").count() == 0
    shoot(page, shots, "batches-read-only", keys)
    token = csrf_of(page)
    before = len(server.client.get("/v1/batches").json()["data"])
    multipart = {"endpoint": "/v1/chat/completions", "completion_window": "1h",
                 "file": {"name": "x.jsonl", "mimeType": "application/jsonl",
                          "buffer": batch_input(1)}}  # fmt: skip
    for headers in ({"X-CSRF-Token": token, "HX-Request": "true"}, {}):
        forged = page.request.post(f"{server.url}/ui/batches", headers=headers, multipart=multipart)
        assert forged.status == 403, (headers, forged.text())
    page.goto(f"{server.url}/ui/pipelines/shout")
    assert page.locator("#run-form").count() == 0
    assert len(server.client.get("/v1/batches").json()["data"]) == before
