"""The web UI's live updates (``/ui/live``, genspool.api.ui.live) and its playground in a real
browser: the system's headless Chromium, driven by Playwright, against a real ``genspool serve``
(SQLite file) serving the bundled ``smollm2-135m-instruct`` (llama.cpp, real tokens), echo
models that answer after a set latency (they compute nothing: the timing is the point) and a
remote model behind the fault server (:mod:`genspool.testing.faults`, real HTTP on loopback).

Checked: the playground streams a real answer into the page (the answer's text read at every DOM
mutation by a MutationObserver the test installs: three distinct states at least before the
last, each a prefix of it, and the last equal to the job's stored result); a compare fills one
column before the other as its branches land; the overview's breaker badge turns open when the
fault server fails every call and closed once it answers again; the jobs list adds new jobs and
their states as they change, pushed (the page makes no poll while its stream is open) without a
reload or a navigation. For every page: a Content-Security-Policy on every answer under ``/ui``
and no violation or script error; every request it makes goes to loopback; no ``gsk_`` key or
provider key in its DOM. A screenshot of each view goes to a temporary directory (printed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from genspool.testing.faults import FaultServer
from tests.helpers.browser import OpenPage, Watch, chromium, watched_pages
from tests.helpers.processes import Server, Spawner
from tests.integration.test_ui import (
    PROVIDER_KEY,
    Keys,
    login,
    no_secret_in,
)

SMOLLM = "smollm2-135m-instruct"
MODELS: list[dict[str, Any]] = [
    {"name": SMOLLM, "provider": "llama_cpp", "context_window": 2048,
     "batching": {"max_batch_size": 1, "max_concurrency": 1},  # one answer at a time
     "limits": {"timeout_s": 300}},
    {"name": "quick", "provider": "echo", "options": {"latency_ms": 300},
     "batching": {"max_batch_size": 1}},
    {"name": "late", "provider": "echo", "options": {"latency_ms": 4000},
     "batching": {"max_batch_size": 1}},
    {"name": "steady", "provider": "echo", "options": {"latency_ms": 1500},
     "batching": {"max_batch_size": 1}},
]  # fmt: skip
#: Every call of ``fragile`` reaches the fault server; its breaker opens after 3 failures.
FRAGILE: dict[str, Any] = {
    "name": "fragile",
    "provider": "openai",
    "options": {"api_key_env": "UPSTREAM_KEY"},
    "max_attempts": 30,
    "limits": {"call_retries": 0, "timeout_s": 5},
    "breaker": {"failures": 3, "cooldown_s": 2, "probes": 1},
    "batching": {"max_batch_size": 2, "max_concurrency": 2},
}
ANSWER = "#play-output article.answer"


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, faults: FaultServer) -> Server:
    fragile = {**FRAGILE, "options": {**FRAGILE["options"], "base_url": f"{faults.url}/v1"}}
    env = {"GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.2",
           "UPSTREAM_KEY": PROVIDER_KEY}  # fmt: skip
    return module_spawner.server(
        [*MODELS, fragile], db=module_spawner.root / "live.db", env=env, startup_s=60
    )


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
    path = tmp_path_factory.mktemp("ui-live-screenshots")
    print(f"screenshots of the live UI: {path}")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: sync_api.Browser) -> Iterator[OpenPage]:
    with watched_pages(browser) as new:
        yield new


def live(page: sync_api.Page) -> None:
    """Wait until the page's live stream said hello."""
    page.wait_for_selector("body[data-live-state=open]", state="attached", timeout=30_000)


def record(page: sync_api.Page, root: str, read: str) -> None:
    """From now on, after every DOM mutation under ``root``, push ``read()`` (a JS arrow
    function) to ``window.seen``. Compiled by the driver, not by the page: the page's CSP
    allows no eval."""
    page.evaluate(
        f"""() => {{
            const read = {read};
            window.seen = [];
            new MutationObserver(() => window.seen.push(read())).observe(
                document.querySelector({root!r}),
                {{subtree: true, childList: true, characterData: true, attributes: true}});
        }}"""
    )


def submit(server: Server, model: str, content: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return str(server.submit(body)["id"])


@pytest.mark.slow
def test_the_playground_streams_an_answer_that_ends_as_the_stored_result(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/playground")
    live(page)
    record(
        page,
        "#play-output",
        "() => document.querySelector('#play-output pre.answer-text')?.textContent ?? null",
    )
    page.select_option("#target", f"model:{SMOLLM}")
    page.fill("#text", "Write three short sentences about the sea.")
    page.fill("input[name=max_tokens]", "48")
    page.fill("input[name=temperature]", "0")
    page.click("#run")
    page.wait_for_selector(f"{ANSWER}[data-status=succeeded]", timeout=180_000)
    final = page.inner_text(f"{ANSWER} pre.answer-text")
    job_id = (page.get_attribute(ANSWER, "id") or "").removeprefix("play-")
    states: list[str | None] = page.evaluate("window.seen")
    distinct = list(dict.fromkeys(s for s in states if s))
    before = distinct[: distinct.index(final)] if final in distinct else distinct
    assert len(before) >= 3, f"{len(before)} intermediate states: {distinct}"
    assert all(final.startswith(s) for s in before), (before, final)
    stored = server.get(job_id)
    assert stored["status"] == "succeeded"
    assert stored["result"]["body"]["choices"][0]["message"]["content"] == final
    assert final.strip()
    print(f"{len(before)} intermediate states before the final {len(final)} characters")
    page.screenshot(path=str(shots / "playground-answer.png"), full_page=True)
    no_secret_in(page.content(), keys, page.url)
    assert not any("/playground/jobs/" in u for u in watch.requests)  # pushed, not polled


def test_a_compare_fills_each_column_as_its_branch_lands(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/playground")
    live(page)
    columns = ("() => Array.from(document.querySelectorAll('#play-output article.column'))"
               ".map(c => c.dataset.state).join(',')")  # fmt: skip
    record(page, "#play-output", columns)
    page.fill("#text", "side by side")
    page.check("input[name=models][value=quick]")
    page.check("input[name=models][value=late]")
    navigated = len(watch.navigations)
    page.click("#compare")
    compare = "#play-output section.compare"
    page.wait_for_selector(f"{compare}[data-status=succeeded]", timeout=30_000)
    seen = list(dict.fromkeys(page.evaluate("window.seen")))
    assert "succeeded,waiting" in seen, seen  # the quick branch landed alone first
    assert seen[-1] == "succeeded,succeeded", seen
    parent = (page.get_attribute(compare, "id") or "").removeprefix("fan-")
    stored = server.get(parent)["result"]["body"]
    texts = page.locator(f"{compare} article.column pre.answer-text").all_inner_texts()
    assert texts == [stored["output"]["b0"], stored["output"]["b1"]] == ["side by side"] * 2
    assert len(watch.navigations) == navigated
    page.screenshot(path=str(shots / "playground-compare.png"), full_page=True)
    no_secret_in(page.content(), keys, page.url)


def test_the_breaker_badge_turns_open_and_closed_live(
    server: Server,
    keys: Keys,
    faults: FaultServer,
    open_page: Callable[[], tuple[sync_api.Page, Watch]],
    shots: Path,
) -> None:
    badge = "tr[data-model=fragile] [data-k=breaker]"
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/")
    live(page)
    assert page.inner_text(badge) == "closed"
    page.evaluate("window.stillTheSamePage = true")
    navigated = len(watch.navigations)
    faults.configure(error_rate=1.0, error_statuses=[503])
    try:
        ids = [submit(server, "fragile", f"doomed {i}") for i in range(6)]
        page.wait_for_selector(f"{badge}.breaker-open", timeout=20_000)
        page.screenshot(path=str(shots / "overview-breaker-open.png"), full_page=True)
    finally:
        faults.configure(error_rate=0.0)  # the model recovers
    page.wait_for_selector(f"{badge}.breaker-closed", timeout=30_000)
    assert page.evaluate("window.stillTheSamePage") is True
    assert len(watch.navigations) == navigated
    assert not any(urlpath(u) == "/ui/overview/board" for u in watch.requests)  # pushed
    page.screenshot(path=str(shots / "overview-breaker-closed.png"), full_page=True)
    server.wait_all(ids, timeout=60)
    no_secret_in(page.content(), keys, page.url)


def test_the_jobs_list_adds_new_jobs_and_their_states_live(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    listed = submit(server, "late", "listed before")
    page, watch = open_page()
    login(page, server, keys.reader, "/ui/jobs?model=late")
    live(page)
    assert page.locator(f"#row-{listed}").count() == 1
    page.evaluate("window.stillTheSamePage = true")
    navigated = len(watch.navigations)
    polls_before = sum("/ui/jobs/live" in u for u in watch.requests)
    rows = "Array.from(document.querySelectorAll('#jobs-table tbody tr'))"
    record(page, "#jobs-table tbody", f"() => {rows}.map(r => r.id + '=' + r.dataset.status)")
    fresh = [submit(server, "late", f"new {i}") for i in range(2)]
    other = submit(server, "quick", "not this model")
    for job_id in fresh:
        page.wait_for_selector(f"#row-{job_id}", timeout=10_000)
    for job_id in [listed, *fresh]:
        page.wait_for_selector(f"#row-{job_id}[data-status=succeeded]", timeout=30_000)
    ids = page.locator("#jobs-table tbody tr").evaluate_all("rows => rows.map(r => r.id)")
    assert ids[:3] == [f"row-{fresh[1]}", f"row-{fresh[0]}", f"row-{listed}"], ids
    assert f"row-{other}" not in ids  # the view's filter holds for new rows too
    seen = " ".join(" ".join(rows) for rows in page.evaluate("window.seen"))
    assert f"row-{fresh[0]}=running" in seen or f"row-{fresh[0]}=queued" in seen, seen
    assert page.evaluate("window.stillTheSamePage") is True
    assert len(watch.navigations) == navigated  # no reload, no navigation
    assert sum("/ui/jobs/live" in u for u in watch.requests) == polls_before  # pushed
    for job_id in [listed, *fresh]:
        assert server.get(job_id)["status"] == "succeeded"
    page.screenshot(path=str(shots / "jobs-live.png"), full_page=True)
    no_secret_in(page.content(), keys, page.url)


@pytest.mark.slow
def test_a_running_job_page_streams_its_tokens_then_shows_its_result(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    body = {"model": SMOLLM, "messages": [{"role": "user", "content": "Count from one to ten."}],
            "max_tokens": 32, "temperature": 0}  # fmt: skip
    story = [{"role": "user", "content": "Tell a long story about a dragon and a knight."}]
    blocker = str(server.submit({**body, "messages": story, "max_tokens": 160})["id"])
    job_id = str(server.submit(body)["id"])  # waits for the model behind the blocker
    page, _ = open_page()
    login(page, server, keys.reader, f"/ui/jobs/{job_id}")
    live(page)
    assert server.get(job_id)["status"] == "queued", "the blocker ended too soon"
    record(page, "main", "() => document.querySelector('#job-stream-text')?.textContent")
    page.wait_for_selector("#job-detail[data-status=succeeded]", timeout=240_000)
    streamed = [s for s in dict.fromkeys(page.evaluate("window.seen")) if s]
    result = server.get(job_id)["result"]["body"]["choices"][0]["message"]["content"]
    assert len(streamed) >= 3 and all(result.startswith(s) for s in streamed), streamed
    assert page.is_hidden("#job-stream")  # the stream box goes, the result shows
    shown = json.loads(page.inner_text("#result"))
    assert shown["body"]["choices"][0]["message"]["content"] == result
    assert page.locator("#timeline li[data-kind=terminal]").count() == 1
    server.wait(blocker, timeout=60)
    page.screenshot(path=str(shots / "job-streamed.png"), full_page=True)


def urlpath(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url).split("?")[0]
