"""The web UI's views of fan-outs, batches, pipeline runs, vector stores, prompts and drift
(genspool.api.ui), in process over the memory store with echo models (``emb`` is an echo
embedding model, named as such: its vectors are hashes of the text, so search finds the same
words, nothing semantic; the real MiniLM is searched in tests/integration/test_ui_views.py).

Checked: each view renders for an admin with the data of the services behind it (branches as
they land, a batch uploaded through the form and its output downloaded, a pipeline run
started from its form, a store's files and a search, a prompt's versions, labels and history
and a label moved, a drift report with its windows and CSS-painted charts); bad input is a 400
naming the field; a tenant key sees only its tenant's work (another's is a 404, its files
too); a read-only key gets no Cancel, Upload, Run or label form, and a forged POST is 403 with
or without the CSRF token; the UI's submissions count against a key's rate limit.
"""

from __future__ import annotations

import html as markup
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from genspool.pipelines.spec import load_pipelines
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import (
    CHAT,
    FAST_RETRY,
    MODELS,
    Keys,
    bearer,
    chat_body,
    make_keys,
    slow_model,
)
from tests.inprocess.test_ui import Browser, assert_secured, until

EMBEDDER = {"name": "emb", "provider": "echo", "options": {"dimensions": 16}}
SAMPLED = {"name": "chat", "provider": "echo", "drift": {"sample_rate": 1.0, "embed_model": "emb"}}
UI_MODELS = [*MODELS, slow_model(5000), EMBEDDER, SAMPLED]
ITEMS = [{"id": f"r{i}", "text": f"review {i}"} for i in range(6)]


def _pipelines(tmp: Path) -> dict[str, Any]:
    said = {"id": "{{item.id}}", "said": "{{steps.say}}"}
    docs = [
        {
            "name": "shout", "description": "Echo every review.",
            "inputs": {"suffix": {"default": "!"}}, "source": {"items": ITEMS},
            "key": "{{item.id}}",
            "steps": [{"id": "say", "model": "echo", "prompt": "{{item.text}}{{inputs.suffix}}"}],
            "sink": [{"jsonl": {"fields": said}}],
        },
        {
            "name": "crawl", "source": {"items": [{"id": f"s{i}"} for i in range(20)]},
            "key": "{{item.id}}", "concurrency": 1,
            "steps": [{"id": "say", "model": "slow", "prompt": "{{item.id}}"}],
        },
    ]  # fmt: skip
    return load_pipelines(docs, "test", tmp)


@pytest.fixture
async def gs(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with serve(
        UI_MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0,
        pipelines=_pipelines(tmp_path),
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


@pytest.fixture
async def browser(gs: InProcess) -> AsyncIterator[Browser]:
    b = Browser(gs)
    yield b
    await b.aclose()


async def as_key(gs: InProcess, key: str) -> Browser:
    b = Browser(gs)
    response = await b.login(key, "/ui/")
    assert response.status_code == 303, response.text
    await b.get("/ui/")
    return b


def lines(n: int, model: str = "echo", prefix: str = "line") -> bytes:
    rows = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": CHAT,
             "body": chat_body(model, f"{prefix} {i}")} for i in range(n)]  # fmt: skip
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


async def upload(
    b: Browser,
    data: bytes | None,
    *,
    endpoint: str = CHAT,
    window: str = "24h",
    token: str | None = None,
    htmx: bool = True,
) -> httpx.Response:
    """The upload form as htmx sends it (the token in a header), or as a plain form (in a
    field)."""
    token = b.csrf if token is None else token
    fields = {"endpoint": endpoint, "completion_window": window}
    headers = {"HX-Request": "true", "X-CSRF-Token": token} if htmx else {}
    if not htmx:
        fields["csrf_token"] = token
    files = {"file": ("input.jsonl", data, "application/jsonl")} if data is not None else None
    return await b.client.post("/ui/batches", data=fields, files=files, headers=headers)


def batch_of(response: httpx.Response) -> str:
    target = response.headers.get("hx-redirect") or response.headers.get("location") or ""
    found = re.fullmatch(r"/ui/batches/(batch_[0-9a-z]+)", target)
    assert found, (response.status_code, target, response.text)
    return found[1]


def labels_of(html: str) -> dict[str, str]:
    """The prompt page's labels and the versions they point at."""
    rows = re.findall(r'<tr data-label="([\w.-]+)">.*?data-k="version">(\d+)<', html)
    return dict(rows)


def bar(html: str, id_: str) -> tuple[int, int, int, int]:
    """(ended, succeeded, failed, total) of the progress bar ``id_``."""
    tag = re.search(rf'<svg class="bar" id="{re.escape(id_)}"[^>]*>', html)
    assert tag, html[:2000]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag[0]))
    return (int(attrs["aria-valuenow"]), int(attrs["data-succeeded"]), int(attrs["data-failed"]),
            int(attrs["data-total"]))  # fmt: skip


async def batch_ended(b: Browser, batch_id: str) -> str:
    async def ended() -> str | None:
        html = (await b.get(f"/ui/batches/{batch_id}/progress")).text
        status = re.search(r'id="batch-detail" data-status="(\w+)"', html)
        return html if status and status[1] in ("completed", "failed", "cancelled") else None

    html: str = await until(ended, 20)
    return html


# -- views --------------------------------------------------------------------------------


async def test_a_fanout_shows_its_branches_as_they_land_and_can_be_cancelled(
    gs: InProcess, keys: Keys
) -> None:
    branches = [{"name": "quick", "body": chat_body("echo", "fast one")},
                {"name": "late", "body": chat_body("slow", "slow one")}]  # fmt: skip
    made = await gs.client.post("/v1/fanouts", json={"branches": branches}, headers=bearer(keys.a))
    assert made.status_code == 202, made.text
    parent = made.json()["id"]
    b = await as_key(gs, keys.a)
    try:
        listed = await b.get("/ui/fanouts")
        assert f'id="fanout-{parent}"' in listed.text and "Fan-outs" in listed.text

        async def quick_landed() -> str | None:
            html = (await b.get(f"/ui/fanouts/{parent}/branches")).text
            quick = re.search(r'data-branch="quick" data-status="(\w+)"', html)
            return html if quick and quick[1] == "succeeded" else None

        html = await until(quick_landed)
        assert re.search(r'data-branch="late" data-status="(queued|running|pending)"', html)
        assert "fast one" in html  # the quick branch's output, as it landed
        assert 'hx-trigger="every 1s"' in html and "1 of 2 landed" in html
        page = await b.get(f"/ui/fanouts/{parent}")
        assert page.status_code == 200 and 'id="cancel-fanout"' in page.text
        cancelled = await b.post(f"/ui/fanouts/{parent}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert 'data-status="cancelled"' in cancelled.text and "every 1s" not in cancelled.text
        job = await b.get(f"/ui/fanouts/{await submit_job(gs, keys.a)}")
        assert job.status_code == 404 and "not a fan-out" in job.text
    finally:
        await b.aclose()


async def submit_job(gs: InProcess, key: str) -> str:
    made = await gs.client.post(
        "/v1/jobs", json={"url": CHAT, "body": chat_body("echo")}, headers=bearer(key)
    )
    return str(made.json()["id"])


async def test_an_ended_fanout_lists_every_branch_from_its_result(
    gs: InProcess, browser: Browser
) -> None:
    branches = [{"name": n, "body": chat_body("echo", f"say {n}")} for n in ("a", "b", "c")]
    made = await gs.client.post("/v1/fanouts", json={"branches": branches})
    parent = made.json()["id"]
    await gs.queue.wait(parent, 10)
    html = (await browser.get(f"/ui/fanouts/{parent}")).text
    assert re.findall(r'data-branch="(\w)" data-status="succeeded"', html) == ["a", "b", "c"]
    assert "3 of 3 landed" in html and 'id="fanout-output"' in html and "say b" in html
    assert "every 1s" not in html  # ended: no more polling


async def test_a_batch_uploaded_through_the_form_runs_and_its_output_downloads(
    gs: InProcess, keys: Keys
) -> None:
    b = await as_key(gs, keys.a)
    try:
        page = await b.get("/ui/batches")
        assert 'id="batch-upload"' in page.text and 'enctype="multipart/form-data"' in page.text
        made = await upload(b, lines(12))
        assert made.status_code == 200, made.text
        batch_id = batch_of(made)
        html = await batch_ended(b, batch_id)
        assert bar(html, "batch-progress") == (12, 12, 0, 12)
        assert "every 1s" not in html and 'id="cancel-batch"' not in html
        output = re.search(r'id="output-file" href="/ui/files/(file-[0-9a-f]+)"', html)
        assert output, html
        got = await b.client.get(f"/ui/files/{output[1]}")
        assert got.status_code == 200 and got.headers["content-disposition"].startswith("attach")
        assert got.headers["content-security-policy"].startswith("default-src 'self'")
        ids = sorted(orjson.loads(line)["custom_id"] for line in got.content.splitlines())
        assert ids == sorted(f"line-{i}" for i in range(12))
        listed = (await b.get("/ui/batches")).text
        assert bar(listed, f"progress-{batch_id}") == (12, 12, 0, 12)
        # A plain form (no script): the token in a field, a 303 to the batch.
        plain = await upload(b, lines(2, prefix="plain"), htmx=False)
        assert plain.status_code == 303, plain.text
        await batch_ended(b, batch_of(plain))
    finally:
        await b.aclose()


async def test_a_bad_upload_is_a_400_naming_the_field_and_stores_nothing(
    gs: InProcess, browser: Browser
) -> None:
    await browser.get("/ui/batches")
    for data, options, says in (
        (None, {}, "file: choose a JSONL file"),
        (lines(1), {"endpoint": "/v1/nowhere"}, "endpoint: '/v1/nowhere' is not one of"),
        (lines(1), {"window": "soon"}, "completion_window: 'soon' is not a duration"),
    ):
        response = await upload(browser, data, **options)
        assert response.status_code == 400 and says in markup.unescape(response.text), says
    too_big = await upload(browser, b"x" * (gs.services.max_body_bytes + 1))
    assert too_big.status_code == 413 and "GENSPOOL_MAX_BODY_BYTES" in too_big.text
    files = gs.services.files
    assert files is not None and (await files.page(None)).data == []
    bad_lines = await upload(browser, b"not json\n")  # checked by the runner, as the API's
    html = await batch_ended(browser, batch_of(bad_lines))
    assert 'data-status="failed"' in html and 'id="batch-errors"' in html


async def test_cancel_a_batch_from_its_page(gs: InProcess, browser: Browser) -> None:
    await browser.get("/ui/batches")
    batch_id = batch_of(await upload(browser, lines(6, model="slow")))

    async def in_progress() -> bool:
        html = (await browser.get(f"/ui/batches/{batch_id}")).text
        return 'data-status="in_progress"' in html and 'id="cancel-batch"' in html

    await until(in_progress)
    response = await browser.post(f"/ui/batches/{batch_id}/cancel")
    assert response.status_code == 200, response.text
    assert re.search(r'id="batch-detail" data-status="(cancelling|cancelled)"', response.text)
    html = await batch_ended(browser, batch_id)
    assert 'data-status="cancelled"' in html
    assert bar(html, "batch-progress")[2] >= 5  # the lines never run end as failed


async def test_a_pipeline_runs_from_its_form_with_its_items_and_output(
    gs: InProcess, keys: Keys
) -> None:
    b = await as_key(gs, keys.a)
    try:
        listed = await b.get("/ui/pipelines")
        assert 'id="pipeline-shout"' in listed.text and "Echo every review." in listed.text
        page = await b.get("/ui/pipelines/shout")
        assert 'id="run-form"' in page.text and 'name="input.suffix"' in page.text
        started = await b.post("/ui/pipelines/shout/runs", data={"input.suffix": "?!"})
        target = started.headers.get("hx-redirect", "")
        found = re.fullmatch(r"/ui/pipelines/shout/runs/(run_[0-9a-f]+)", target)
        assert started.status_code == 200 and found, (started.status_code, started.text)

        async def completed() -> str | None:
            html = (await b.get(target)).text
            return html if 'id="run-detail" data-status="completed"' in html else None

        html = await until(completed)
        assert bar(html, "run-progress") == (6, 6, 0, 6)
        assert html.count('class="item"') == 6 and "review 3?!" in html
        output = re.search(r'class="output-file" href="/ui/files/(file-[0-9a-f]+)"', html)
        assert output, html
        rows = (await b.client.get(f"/ui/files/{output[1]}")).content.splitlines()
        assert sorted(orjson.loads(r)["said"] for r in rows) == sorted(
            f"review {i}?!" for i in range(6)
        )
        assert f'id="run-{found[1]}"' in (await b.get("/ui/pipelines")).text
        wrong = await b.post("/ui/pipelines/shout/runs", data={"input.nope": "1"})
        assert wrong.status_code == 400 and "inputs: unknown nope" in wrong.text
        filtered = await b.get(f"{target}?status=skipped")
        assert filtered.status_code == 200 and 'class="item"' not in filtered.text
        assert (await b.get(f"{target}?status=bogus")).status_code == 400
        fragment = await b.get(f"{target}/items?status=done&after=2")
        assert re.findall(r'class="item" data-seq="(\d+)"', fragment.text) == ["3", "4", "5", "6"]
        assert "every 2s" not in fragment.text  # the run ended: no more polling
    finally:
        await b.aclose()


async def test_cancel_a_pipeline_run(gs: InProcess, browser: Browser) -> None:
    await browser.get("/ui/pipelines/crawl")
    started = await browser.post("/ui/pipelines/crawl/runs", data={})
    target = started.headers["hx-redirect"]

    async def running() -> bool:
        return 'id="cancel-run"' in (await browser.get(target)).text

    await until(running)
    response = await browser.post(f"{target}/cancel")
    assert response.status_code == 200, response.text
    assert re.search(r'id="run-detail" data-status="(cancelling|cancelled)"', response.text)


async def test_a_vector_stores_files_and_search(gs: InProcess, keys: Keys) -> None:
    api = bearer(keys.a)
    text = b"# Rockets\n\nRocket engines burn kerosene.\n\n# Bread\n\nSourdough rises slowly."
    up = await gs.client.post(
        "/v1/files", files={"file": ("notes.md", text)}, data={"purpose": "assistants"},
        headers=api,
    )  # fmt: skip
    store = await gs.client.post(
        "/v1/vector_stores", json={"name": "notes", "model": "emb"}, headers=api
    )
    store_id, file_id = store.json()["id"], up.json()["id"]
    added = await gs.client.post(
        f"/v1/vector_stores/{store_id}/files", json={"file_id": file_id}, headers=api
    )
    assert added.status_code == 200, added.text
    b = await as_key(gs, keys.a)
    try:
        assert f'id="store-{store_id}"' in (await b.get("/ui/vector-stores")).text

        async def ingested() -> str | None:
            html = (await b.get(f"/ui/vector-stores/{store_id}")).text
            return html if f'id="vf-{file_id}" data-status="completed"' in html else None

        html = await until(ingested)
        chunks = re.search(rf'id="vf-{file_id}".*?data-k="chunks">(\d+)<', html, re.S)
        assert chunks and int(chunks[1]) >= 1 and "notes.md" in html
        found = await b.get(f"/ui/vector-stores/{store_id}/search?q=Sourdough+rises+slowly.&k=5")
        assert found.status_code == 200, found.text
        hits = re.findall(r'<li class="hit" data-file="([^"]+)" data-score="([\d.]+)"', found.text)
        assert hits and hits[0][0] == file_id and float(hits[0][1]) > 0
        assert "notes.md" in found.text and "Sourdough" in found.text
        inline = await b.get(f"/ui/vector-stores/{store_id}?q=kerosene")  # without script
        table = await b.get(f"/ui/vector-stores/{store_id}/files")
        assert f'id="vf-{file_id}" data-status="completed"' in table.text
        assert '<li class="hit"' in inline.text
        for query, says in (("q=&k=5", "q: write what"), ("q=x&k=7", "k: one of"),
                            ("q=" + "x" * 2001, "q: at most")):  # fmt: skip
            bad = await b.get(f"/ui/vector-stores/{store_id}/search?{query}")
            assert bad.status_code == 400 and says in bad.text, query
    finally:
        await b.aclose()


async def test_a_prompts_versions_labels_history_and_a_label_move(
    gs: InProcess, keys: Keys
) -> None:
    api = bearer(keys.a)
    for text in ("Hello {{name}}", "Hi {{name}}, {{tone}}"):
        body = {"id": "greet", "kind": "text", "template": text, "labels": ["production"]}
        assert (await gs.client.post("/v1/prompts", json=body, headers=api)).status_code == 201
    b = await as_key(gs, keys.a)
    try:
        assert 'id="prompt-greet"' in (await b.get("/ui/prompts")).text
        page = (await b.get("/ui/prompts/greet")).text
        assert 'id="version-2"' in page and 'id="version-1"' in page
        assert "Hi {{name}}, {{tone}}" in page and "Hello {{name}}" in page
        assert page.index('id="version-2"') < page.index('id="version-1"')  # newest first
        assert labels_of(page) == {"latest": "2", "production": "2"}
        assert page.count('data-action="version.created"') == 2
        moved = await b.post(
            "/ui/prompts/greet/labels", data={"label": "production", "version": "1"}, htmx=False
        )
        assert moved.status_code == 303 and moved.headers["location"] == "/ui/prompts/greet"
        page = (await b.get("/ui/prompts/greet")).text
        assert labels_of(page) == {"latest": "2", "production": "1"}
        assert page.count('data-action="label.moved"') == 3  # two at creation, one now
        bad = await b.post("/ui/prompts/greet/labels", data={"label": "latest", "version": "1"})
        assert bad.status_code == 400 and "cannot be moved" in bad.text
        missing = await b.post("/ui/prompts/greet/labels", data={"label": "x", "version": "9"})
        assert missing.status_code == 404
    finally:
        await b.aclose()


async def test_a_drift_report_with_its_windows_and_charts_painted_by_css(
    gs: InProcess, browser: Browser
) -> None:
    for i in range(25):
        body = {"url": CHAT, "body": chat_body("chat", "word " * (i + 1))}
        assert (await gs.client.post("/v1/jobs", json=body)).status_code == 202
    store = gs.queue.storage.drift
    assert store is not None

    async def sampled() -> bool:
        return len(await store.drift_list("chat", 0, 1e12, 100)) >= 25

    await until(sampled, 20)
    page = await browser.get("/ui/drift")  # the one sampled model, default windows
    assert page.status_code == 200 and 'data-verdict="insufficient"' in page.text
    window = "baseline_start=-1h&baseline_end=now&current_start=-1h&current_end=now"
    report = (await browser.get(f"/ui/drift?model=chat&{window}")).text
    assert 'data-verdict="no_drift"' in report and report.count("<svg") == 3
    assert 'class="drift-base"' in report and 'class="drift-current"' in report
    assert 'fill="#' not in report and "style=" not in report and "<style" not in report
    assert re.search(r'data-method="centroid" data-flagged="false"', report)
    for query, says in (
        ("model=nope", "model: unknown model"),
        ("model=chat&current_start=yesterday-ish", "current_start"),
        ("model=chat&baseline_start=-1d&baseline_end=-2d", "baseline_end"),
    ):
        bad = await browser.get(f"/ui/drift?{query}")
        assert bad.status_code == 400 and says in bad.text, query


async def test_every_view_is_secured_and_shows_no_key(gs: InProcess, keys: Keys) -> None:
    b = await as_key(gs, keys.admin)
    try:
        paths = ["/ui/fanouts", "/ui/batches", "/ui/batches/table", "/ui/pipelines",
                 "/ui/pipelines/shout", "/ui/vector-stores", "/ui/prompts",
                 "/ui/drift"]  # fmt: skip
        for path in paths:
            response = await b.get(path)
            assert response.status_code == 200, (path, response.text)
            assert_secured(response)
            assert "gsk_" not in response.text, path
        nav = (await b.get("/ui/")).text
        for label in ("Fan-outs", "Batches", "Pipelines", "Vector stores", "Prompts", "Drift"):
            assert f">{label}</a>" in nav, label
    finally:
        await b.aclose()


# -- tenants and scopes ---------------------------------------------------------------------


async def test_a_tenant_key_sees_only_its_tenants_work(gs: InProcess, keys: Keys) -> None:
    """Tenant b's batch, run, store, prompt and fan-out, and its output file: listed for b,
    absent from a's lists and a 404 to a's pages."""
    b_ui = await as_key(gs, keys.b)
    a_ui = await as_key(gs, keys.a)
    try:
        batch_id = batch_of(await upload(b_ui, lines(2)))
        html = await batch_ended(b_ui, batch_id)
        output = re.search(r'id="output-file" href="(/ui/files/file-[0-9a-f]+)"', html)
        assert output
        run = (await b_ui.post("/ui/pipelines/shout/runs", data={})).headers["hx-redirect"]
        store = await gs.client.post("/v1/vector_stores", json={"name": "b", "model": "emb"},
                                     headers=bearer(keys.b))  # fmt: skip
        store_id = store.json()["id"]
        prompt = {"id": "secret-plan", "kind": "text", "template": "x"}
        await gs.client.post("/v1/prompts", json=prompt, headers=bearer(keys.b))
        one = {"branches": [{"name": "x", "body": chat_body("echo")}]}
        fan = await gs.client.post("/v1/fanouts", headers=bearer(keys.b), json=one)
        fan_id = fan.json()["id"]
        theirs = {
            "/ui/batches": batch_id, "/ui/pipelines": run.rsplit("/", 1)[1],
            "/ui/vector-stores": store_id, "/ui/prompts": "secret-plan", "/ui/fanouts": fan_id,
        }  # fmt: skip
        for listing, thing in theirs.items():
            assert thing in (await b_ui.get(listing)).text, listing
            assert thing not in (await a_ui.get(listing)).text, listing
        for page in (f"/ui/batches/{batch_id}", f"/ui/batches/{batch_id}/progress", run,
                     f"/ui/vector-stores/{store_id}", f"/ui/vector-stores/{store_id}/search?q=x",
                     "/ui/prompts/secret-plan", f"/ui/fanouts/{fan_id}", output[1]):  # fmt: skip
            assert (await a_ui.get(page)).status_code == 404, page
        assert (await a_ui.post(f"/ui/batches/{batch_id}/cancel")).status_code == 404
        assert (await a_ui.get("/ui/fanouts?tenant=beta")).status_code == 403
        admin = await as_key(gs, keys.admin)
        try:  # an admin reaches every tenant's batches, as the API's admin does
            assert batch_id in (await admin.get("/ui/batches")).text
            assert (await admin.get(output[1])).status_code == 200
        finally:
            await admin.aclose()
    finally:
        await a_ui.aclose()
        await b_ui.aclose()


async def test_a_read_only_key_has_no_buttons_and_a_forged_post_is_403(
    gs: InProcess, keys: Keys
) -> None:
    writer = await as_key(gs, keys.a)
    reader = await as_key(gs, keys.a_read)
    try:
        batch_id = batch_of(await upload(writer, lines(3, model="slow")))
        run = (await writer.post("/ui/pipelines/crawl/runs", data={})).headers["hx-redirect"]
        await gs.client.post("/v1/prompts", headers=bearer(keys.a),
                             json={"id": "p", "kind": "text", "template": "x"})  # fmt: skip
        fan = await gs.client.post("/v1/fanouts", headers=bearer(keys.a), json={"branches": [
            {"name": "s", "body": chat_body("slow")}]})  # fmt: skip
        fan_id = fan.json()["id"]
        pages = {
            "/ui/batches": ('id="batch-upload"', "/ui/batches"),
            f"/ui/batches/{batch_id}": ('id="cancel-batch"', "/cancel"),
            "/ui/pipelines/crawl": ('id="run-form"', '/runs"'),
            run: ('id="cancel-run"', "/cancel"),
            "/ui/prompts/p": ('id="label-form"', "/labels"),
            f"/ui/fanouts/{fan_id}": ('id="cancel-fanout"', "/cancel"),
        }
        for path, (button, action) in pages.items():
            seen = (await reader.get(path)).text
            assert button not in seen and f'hx-post="{path}' not in seen, path
            assert action not in seen or action == "/ui/batches", path
        forged = ["/ui/batches", f"/ui/batches/{batch_id}/cancel", "/ui/pipelines/crawl/runs",
                  f"{run}/cancel", "/ui/prompts/p/labels",
                  f"/ui/fanouts/{fan_id}/cancel"]  # fmt: skip
        for path in forged:
            for token in (reader.csrf, ""):
                response = await reader.post(path, csrf=token, data={"label": "x", "version": "1"})
                assert response.status_code == 403, (path, token, response.text)
        refused = await upload(reader, lines(1))
        assert refused.status_code == 403
        assert "lacks the 'submit' scope" in markup.unescape(refused.text)
        batches = gs.services.batches
        assert batches is not None
        assert [b.id for b in (await batches.page(None, after=None, limit=10)).data] == [batch_id]
        for path in (f"/ui/batches/{batch_id}", f"/ui/fanouts/{fan_id}"):
            assert 'class="danger"' in (await writer.get(path)).text, path
        await writer.post(f"/ui/batches/{batch_id}/cancel")
        await writer.post(f"{run}/cancel")
        await writer.post(f"/ui/fanouts/{fan_id}/cancel")
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_a_post_without_this_sessions_token_is_refused(
    gs: InProcess, browser: Browser
) -> None:
    """Open mode (no key yet): nothing to log in with, CSRF all the same."""
    await browser.get("/ui/batches")
    for token in ("", "0" * 64):
        response = await upload(browser, lines(1), token=token)
        assert response.status_code == 403 and "CSRF" in response.text
        plain = await upload(browser, lines(1), token=token, htmx=False)
        assert plain.status_code == 403
    batches = gs.services.batches
    assert batches is not None and (await batches.page(None, after=None, limit=10)).data == []


async def test_the_uis_submissions_count_against_the_keys_rate_limit(
    gs: InProcess, keys: Keys
) -> None:
    b = await as_key(gs, keys.limited)  # 3 per minute
    try:
        answers = [await upload(b, lines(1)) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        over = await upload(b, lines(1))
        assert over.status_code == 429 and "per minute" in over.text
        again = await b.post("/ui/pipelines/shout/runs", data={})
        assert again.status_code == 429
    finally:
        await b.aclose()
