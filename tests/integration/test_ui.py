"""The web UI (``/ui``, genspool.api.ui) in a real browser: the system's headless Chromium,
driven by Playwright, against a real ``genspool serve`` (SQLite file) whose remote models are
the fault server (:mod:`genspool.testing.faults`, a real HTTP server on loopback, scripted per
model: ``flaky`` always fails, ``mend`` fails until a test mends it, ``slow`` answers after a
minute).

Checked: the login flow and its cookie's flags; a Content-Security-Policy on every answer
under ``/ui``, with no violation reported by the browser; every request the pages make goes to
loopback; no API key or provider key in any page or served file; a read-only key sees no
Replay or Cancel button and a forged POST (with or without the CSRF token) is 403; the jobs
view's URL filters and next page; a dead-lettered job's timeline of attempts; Replay → confirm
→ the row updates live without a reload (one row, and the selected rows); cancelling a running
job from its page. A screenshot of each view goes to a temporary directory (printed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright import sync_api

from genspool.testing.faults import FaultServer
from tests.helpers.browser import OpenPage, Watch, chromium, watched_pages
from tests.helpers.processes import Server, Spawner

PROVIDER_KEY = "sk-upstream-9f2c7e1b4a6d8e0f3c5a7b9d1e2f4a6c"
FAILING = {"outcome": "error", "status": 503, "latency_s": 0.01}
RULES = [
    {"model": "flaky", **FAILING},
    {"model": "mend", **FAILING},
    {"model": "slow", "latency_s": 60.0},
]


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    server = FaultServer(scripts=RULES)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, faults: FaultServer) -> Server:
    remote = {
        "provider": "openai",
        "options": {"base_url": f"{faults.url}/v1", "api_key_env": "UPSTREAM_KEY"},
        "breaker": {"enabled": False},
        "limits": {"call_retries": 0, "timeout_s": 120},
    }
    models = [
        {"name": "echo", "provider": "echo"},
        {"name": "flaky", **remote, "max_attempts": 3},
        {"name": "mend", **remote, "max_attempts": 2},
        {"name": "slow", **remote, "batching": {"max_batch_size": 1}},
    ]
    env = {"GENSPOOL_RETRY_BASE_S": "0.05", "GENSPOOL_RETRY_CAP_S": "0.2",
           "UPSTREAM_KEY": PROVIDER_KEY}  # fmt: skip
    return module_spawner.server(models, db=module_spawner.root / "ui.db", env=env)


@dataclass(frozen=True)
class Keys:
    admin: str
    reader: str


@pytest.fixture(scope="module")
def keys(server: Server) -> Keys:
    """Made over the API while it is still open: the first key turns auth on."""
    made = server.client.post("/v1/keys", json={"tenant": "default", "scopes": ["admin"]})
    assert made.status_code == 201, made.text
    admin = made.json()["key"]
    server.client.headers["Authorization"] = f"Bearer {admin}"
    reader = server.client.post("/v1/keys", json={"tenant": "default", "scopes": ["read"]})
    assert reader.status_code == 201, reader.text
    return Keys(admin, reader.json()["key"])


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-screenshots")
    print(f"screenshots of the UI: {path}")
    return path


@pytest.fixture(autouse=True)
def fresh_rules(faults: FaultServer) -> None:
    faults.script(RULES)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: sync_api.Browser) -> Iterator[OpenPage]:
    with watched_pages(browser) as new:
        yield new


def login(page: sync_api.Page, server: Server, key: str, path: str = "/ui/") -> None:
    page.goto(f"{server.url}{path}")
    assert urlsplit(page.url).path == "/ui/login", page.url
    page.fill("#key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(server.url + path) + r"$"))


def csrf_of(page: sync_api.Page) -> str:
    headers = page.get_attribute("body", "hx-headers") or ""
    found = re.search(r'"X-CSRF-Token": "([0-9a-f]{64})"', headers)
    assert found, headers
    return found[1]


def submit(server: Server, model: str, content: str = "hi") -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return str(server.submit(body)["id"])


def no_secret_in(text: str, keys: Keys, where: str) -> None:
    for secret in ("gsk_", keys.admin, keys.reader, PROVIDER_KEY):
        assert secret not in text, f"{secret[:8]}… in {where}"


def test_login_flow_and_cookie_flags(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    page, _ = open_page()
    page.goto(f"{server.url}/ui/jobs?status=failed")
    assert urlsplit(page.url).path == "/ui/login"
    page.fill("#key", keys.admin[:-4] + "zzzz")
    page.click("#login-form button[type=submit]")
    assert page.inner_text("#login-error") == "invalid API key"
    assert page.input_value("#key") == ""  # the form comes back empty
    page.screenshot(path=str(shots / "login.png"))
    page.fill("#key", keys.admin)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{server.url}/ui/jobs?status=failed")
    cookies = {c["name"]: c for c in page.context.cookies()}
    for name in ("genspool_ui_key", "genspool_ui_sid"):
        cookie = cookies[name]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie["name"]
        assert cookie["path"] == "/ui" and not cookie["secure"]
    assert page.evaluate("document.cookie") == ""  # no script can read them
    assert "tenant default" in page.inner_text("#who")
    page.click("#logout")
    page.wait_for_url(f"{server.url}/ui/login")
    assert "genspool_ui_key" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{server.url}/ui/")
    assert urlsplit(page.url).path == "/ui/login"


def test_every_view_is_secure_local_and_free_of_secrets(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    done = submit(server, "echo", "hello")
    dead = submit(server, "flaky", "doomed")
    server.wait_all([done, dead], timeout=30)
    page, watch = open_page()
    login(page, server, keys.admin)
    # The board follows the page's live stream (its script runs under the CSP).
    page.wait_for_selector("body[data-live-state=open]", state="attached", timeout=5000)
    assert any(urlsplit(u).path == "/ui/live" and "watch=board" in u for u in watch.requests)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    views = {"jobs": "/ui/jobs", "job": f"/ui/jobs/{dead}", "dead-letters": "/ui/dead-letters"}
    for name, path in views.items():
        page.goto(f"{server.url}{path}")
        page.wait_for_load_state("load")  # not networkidle: a page's live stream stays open
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        no_secret_in(page.content(), keys, path)
    assert page.locator("tr[data-status=failed]").count() >= 1
    served = {u for u in watch.requests if urlsplit(u).path.startswith("/ui")}
    assert any(u.endswith(".js") for u in served) and any(u.endswith(".css") for u in served)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    for url in served:  # every file and fragment the pages loaded, fetched again
        if urlsplit(url).path == "/ui/live":
            continue  # a stream that does not end (tests/integration/test_ui_live.py reads it)
        text = httpx.get(url, cookies=cookies, timeout=10).text
        no_secret_in(text, keys, url)


def test_a_read_only_key_sees_no_button_and_a_forged_post_is_403(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    running = submit(server, "slow")
    dead = submit(server, "flaky")
    server.wait(dead, timeout=30)
    server.wait(running, until={"running"}, timeout=30)
    page, _ = open_page()
    login(page, server, keys.reader, "/ui/dead-letters")
    assert page.locator(f"#dl-{dead}").count() == 1
    assert page.locator("button.replay, #replay-selected, #select-all").count() == 0
    page.screenshot(path=str(shots / "dead-letters-read-only.png"), full_page=True)
    page.goto(f"{server.url}/ui/jobs/{running}")
    assert page.inner_text("#job-status") == "running"
    assert page.locator("#cancel").count() == 0
    token = csrf_of(page)
    for path in (f"/ui/jobs/{running}/cancel", f"/ui/dead-letters/{dead}/replay"):
        for headers in ({"X-CSRF-Token": token, "HX-Request": "true"}, {}):
            forged = page.request.post(f"{server.url}{path}", headers=headers)
            assert forged.status == 403, (path, headers, forged.text())
        # And from the page's own script, as an injected one would send it.
        status = page.evaluate(
            "([p, t]) => fetch(p, {method: 'POST', headers: {'X-CSRF-Token': t}})"
            ".then(r => r.status)",
            [path, token],
        )
        assert status == 403, path
    assert server.get(dead)["status"] == "failed"
    assert server.get(running)["status"] == "running"
    server.client.post(f"/v1/jobs/{running}/cancel")


def test_jobs_filters_next_page_and_a_timeline_of_attempts(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    ids = [submit(server, "echo", f"page {i}") for i in range(12)]
    dead = submit(server, "flaky", "three tries")
    server.wait_all([*ids, dead], timeout=30)
    page, _ = open_page()
    login(page, server, keys.admin, "/ui/jobs?model=echo&limit=5")
    seen: list[str] = []
    for expected in (5, 5):
        rows = page.locator("#jobs-table tbody tr")
        assert rows.count() == expected
        seen += [r.get_attribute("id") or "" for r in rows.all()]
        page.click("#next-page")
        page.wait_for_load_state()
        assert "after=job_" in page.url and "model=echo" in page.url and "limit=5" in page.url
    seen += [r.get_attribute("id") or "" for r in page.locator("#jobs-table tbody tr").all()]
    mine = [f"row-{i}" for i in reversed(ids)]
    assert seen[: len(mine)] == mine  # newest first, across pages, none twice
    page.goto(f"{server.url}/ui/jobs")
    page.select_option("select[name=status]", "failed")
    page.select_option("select[name=model]", "flaky")
    page.click("#job-filters button[type=submit]")
    page.wait_for_url(re.compile(r"status=failed.*model=flaky|model=flaky.*status=failed"))
    assert page.locator(f"#row-{dead}").count() == 1
    assert set(page.locator("#jobs-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)")) == {"failed"}  # fmt: skip
    page.click(f"#row-{dead} a")
    page.wait_for_url(f"{server.url}/ui/jobs/{dead}")
    steps = page.locator("#timeline li")
    kinds = steps.evaluate_all("items => items.map(i => [i.dataset.kind, i.dataset.outcome])")
    assert kinds == [["queued", None], ["attempt", "failed"], ["attempt", "failed"],
                     ["attempt", "failed"], ["terminal", None]]  # fmt: skip
    assert page.locator("#timeline .attempt-error").count() == 3
    assert "503" in page.inner_text("#timeline")
    assert "doomed" not in page.inner_text("#request") and "three tries" in page.inner_text(
        "#request"
    )
    page.screenshot(path=str(shots / "job-timeline.png"), full_page=True)


def test_replay_confirm_and_the_rows_update_live(
    server: Server,
    keys: Keys,
    faults: FaultServer,
    open_page: Callable[[], tuple[sync_api.Page, Watch]],
    shots: Path,
) -> None:
    dead = [submit(server, "mend", f"mend {i}") for i in range(3)]
    for job_id in dead:
        assert server.wait(job_id, timeout=30)["status"] == "failed"
    faults.script([r for r in RULES if r["model"] != "mend"])  # mend answers from now on
    page, watch = open_page()
    login(page, server, keys.admin, "/ui/dead-letters?model=mend")
    page.evaluate("window.stillTheSamePage = true")
    navigated = len(watch.navigations)
    asked: list[str] = []

    def confirm(dialog: sync_api.Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)
    page.click(f"#dl-{dead[0]} button.replay")
    page.wait_for_selector(f"#dl-{dead[0]}[data-status=succeeded]", timeout=20_000)
    assert asked == [f"Replay job {dead[0]}?"]
    page.check(f"#dl-{dead[1]} input[name=ids]")
    page.check(f"#dl-{dead[2]} input[name=ids]")
    page.click("#replay-selected")
    for job_id in dead[1:]:
        page.wait_for_selector(f"#dl-{job_id}[data-status=succeeded]", timeout=20_000)
    assert asked[1] == "Replay the selected dead letters?"
    assert page.evaluate("window.stillTheSamePage") is True
    assert len(watch.navigations) == navigated  # no reload, no navigation
    assert [server.get(i)["status"] for i in dead] == ["succeeded"] * 3
    page.screenshot(path=str(shots / "dead-letters-replayed.png"), full_page=True)


def test_cancel_a_running_job_from_its_page(
    server: Server, keys: Keys, open_page: Callable[[], tuple[sync_api.Page, Watch]], shots: Path
) -> None:
    job_id = submit(server, "slow", "take your time")
    page, _ = open_page()
    login(page, server, keys.admin, f"/ui/jobs/{job_id}")
    page.wait_for_selector("#job-detail[data-status=running]", timeout=20_000)  # live, pushed
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("#job-detail[data-status=cancelled]", timeout=10_000)
    assert page.locator("#cancel").count() == 0
    assert page.locator("#timeline li[data-kind=terminal]").inner_text().startswith("cancelled")
    assert server.get(job_id)["status"] == "cancelled"
    page.screenshot(path=str(shots / "job-cancelled.png"), full_page=True)
