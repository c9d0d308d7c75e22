"""The web UI in process (genspool.api.ui): its security (login cookie, CSRF, scopes, tenants,
headers, no secret in a page) and its views' data (filters, pages, timeline, replay, cancel,
overview), over the same app ``genspool serve`` builds. Each :class:`Browser` is a client with
its own cookies, as a browser would be; the real browser's tests are in
tests/integration/test_ui.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from genspool.testing.inprocess import BASE_URL, InProcess, serve
from tests.helpers.api import CHAT, FAST_RETRY, MODELS, Keys, chat_body, make_keys, slow_model

UI_MODELS = [*MODELS, slow_model(5000)]
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"|"X-CSRF-Token": "([0-9a-f]{64})"')


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve(UI_MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as running:
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


class Browser:
    """One browser: its own cookies; the CSRF token of the last page it loaded."""

    def __init__(self, gs: InProcess, base_url: str = BASE_URL) -> None:
        transport = httpx.ASGITransport(app=gs.app)
        self.client = httpx.AsyncClient(transport=transport, base_url=base_url)
        self.csrf = ""

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.get(path, **kwargs)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found[1] or found[2]
        return response

    async def login(self, key: str, next_path: str = "/ui/jobs") -> httpx.Response:
        await self.get("/ui/login")
        form = {"key": key, "csrf_token": self.csrf, "next": next_path}
        return await self.client.post("/ui/login", data=form)

    async def post(
        self, path: str, csrf: str | None = None, data: Any = None, htmx: bool = True
    ) -> httpx.Response:
        """A state change as htmx sends it: the token in a header (``csrf=""``: none)."""
        headers = {"HX-Request": "true"} if htmx else {}
        token = self.csrf if csrf is None else csrf
        if token:
            headers["X-CSRF-Token"] = token
        return await self.client.post(path, headers=headers, data=data)

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def browser(gs: InProcess) -> AsyncIterator[Browser]:
    b = Browser(gs)
    yield b
    await b.aclose()


async def submit(gs: InProcess, key: str | None, model: str, content: str = "hi") -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await gs.client.post(
        "/v1/jobs", json={"url": CHAT, "body": chat_body(model, content)}, headers=headers
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def rows(html: str, prefix: str = "row-") -> list[str]:
    return re.findall(rf'<tr id="{prefix}(job_[0-9a-f]+)"', html)


# -- security -----------------------------------------------------------------------------


def assert_secured(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    for part in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                 "frame-ancestors 'none'", "object-src 'none'"):  # fmt: skip
        assert part in csp, (where, csp)
    assert "unsafe" not in csp, where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("x-content-type-options") == "nosniff", where


async def test_every_answer_under_ui_carries_the_security_headers(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    job_id = await submit(gs, keys.admin, "echo")
    answers = [await browser.get(p) for p in ("/ui", "/ui/", "/ui/jobs", "/ui/nope")]
    answers.append(await browser.get("/ui/static/htmx-2.0.11.min.js"))
    answers.append(await browser.post("/ui/logout", csrf=""))  # 403: no token
    await browser.login(keys.admin)
    for path in ("/ui/", "/ui/overview/board", "/ui/jobs?status=bogus", f"/ui/jobs/{job_id}",
                 "/ui/dead-letters", "/ui/jobs/live?ids=" + job_id, "/ui/login"):  # fmt: skip
        answers.append(await browser.get(path))
    assert {r.status_code for r in answers} >= {200, 303, 307, 400, 403, 404}
    for response in answers:
        assert_secured(response)
        if "/static/" not in response.request.url.path:
            assert response.headers["cache-control"] == "no-store"
    api = await gs.client.get("/healthz")
    assert "content-security-policy" not in api.headers  # the API's answers are unchanged


async def test_with_keys_a_page_sends_the_browser_to_log_in(browser: Browser, keys: Keys) -> None:
    response = await browser.get("/ui/jobs?status=failed")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Dfailed"
    page = f"{BASE_URL}/ui/jobs?model=echo"
    polled = await browser.client.get(
        "/ui/jobs/live?ids=", headers={"HX-Request": "true", "HX-Current-URL": page}
    )
    assert polled.status_code == 401  # htmx follows the header, back to the page (not the poll)
    assert polled.headers["hx-redirect"] == "/ui/login?next=%2Fui%2Fjobs%3Fmodel%3Decho"
    elsewhere = {"HX-Request": "true", "HX-Current-URL": "http://evil.example/ui/x"}
    polled = await browser.client.get("/ui/overview/board", headers=elsewhere)
    assert polled.headers["hx-redirect"] == "/ui/login?next="


async def test_login_keeps_the_key_in_a_strict_httponly_cookie_and_never_in_a_page(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    job_id = await submit(gs, keys.admin, "echo", f"my key is {keys.a}")
    response = await browser.login(keys.admin, "/ui/jobs?model=echo")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/jobs?model=echo"
    cookies = {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}
    for name in ("genspool_ui_key", "genspool_ui_sid"):
        flags = cookies[name].lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert "secure" not in flags  # plain http on loopback
    pages = [await browser.get(p) for p in ("/ui/", "/ui/jobs", f"/ui/jobs/{job_id}",
                                            "/ui/dead-letters", "/ui/overview/board")]  # fmt: skip
    for page in pages:
        assert page.status_code == 200, page.text
        assert "gsk_" not in page.text, page.request.url
    assert "my key is [redacted API key]" in pages[2].text  # pasted into the prompt: blanked


async def test_over_https_the_cookies_are_secure(gs: InProcess, keys: Keys) -> None:
    b = Browser(gs, "https://genspool.test")
    try:
        response = await b.login(keys.admin)
        assert response.status_code == 303
        for cookie in response.headers.get_list("set-cookie"):
            assert "secure" in cookie.lower(), cookie
    finally:
        await b.aclose()


async def test_a_bad_login_says_why_and_echoes_nothing(browser: Browser, keys: Keys) -> None:
    wrong = keys.admin[:-6] + "abcdef"
    response = await browser.login(wrong)
    assert response.status_code == 401 and "invalid API key" in response.text
    assert wrong not in response.text and "gsk_" + wrong[4:10] not in response.text
    response = await browser.login(keys.a_submit)
    assert response.status_code == 403 and "lacks the &#39;read&#39; scope" in response.text
    response = await browser.login(keys.revoked)
    assert response.status_code == 401 and "revoked" in response.text
    assert "genspool_ui_key" not in response.headers.get("set-cookie", "")
    forged = await browser.client.post("/ui/login", data={"key": keys.admin})
    assert forged.status_code == 403 and "CSRF" in forged.text  # no token: no login


async def test_logout_ends_the_session_and_needs_the_token(browser: Browser, keys: Keys) -> None:
    await browser.login(keys.admin)
    assert (await browser.get("/ui/jobs")).status_code == 200
    assert (await browser.post("/ui/logout", csrf="")).status_code == 403
    assert (await browser.get("/ui/jobs")).status_code == 200  # still logged in
    response = await browser.post("/ui/logout", htmx=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert (await browser.get("/ui/jobs")).status_code == 303


async def test_a_revoked_key_ends_its_session(gs: InProcess, browser: Browser, keys: Keys) -> None:
    await browser.login(keys.a)
    assert (await browser.get("/ui/jobs")).status_code == 200
    await gs.services.keys.revoke(keys.a.split("_")[1])
    response = await browser.get("/ui/jobs")
    assert response.status_code == 303 and "expired=1" in response.headers["location"]
    assert 'genspool_ui_key=""' in response.headers.get("set-cookie", "")


async def test_a_state_change_needs_this_sessions_token(gs: InProcess, browser: Browser) -> None:
    """Open mode (no key yet): no login, but CSRF all the same."""
    job_id = await submit(gs, None, "slow")
    await browser.get(f"/ui/jobs/{job_id}")
    other = Browser(gs)
    try:
        await other.get("/ui/jobs")
        assert other.csrf and other.csrf != browser.csrf
        for token in ("", other.csrf, "0" * 64):
            response = await browser.post(f"/ui/jobs/{job_id}/cancel", csrf=token)
            assert response.status_code == 403 and "CSRF" in response.text, token
        assert (await gs.queue.get(job_id)).status.value in ("queued", "running")
        as_form = await browser.post(
            f"/ui/jobs/{job_id}/cancel", csrf="", data={"csrf_token": browser.csrf}
        )
        assert as_form.status_code == 200, as_form.text
        assert (await gs.queue.get(job_id)).status.value == "cancelled"
    finally:
        await other.aclose()


async def test_a_read_only_key_sees_no_button_and_a_forged_post_is_refused(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    running = await submit(gs, keys.a, "slow")
    dead = await submit(gs, keys.a, "doomed")
    await gs.queue.wait(dead, 10)
    await browser.login(keys.a_read)
    job_page = await browser.get(f"/ui/jobs/{running}")
    letters = await browser.get("/ui/dead-letters")
    assert dead in letters.text and "model_timeout" in letters.text
    assert 'id="cancel"' not in job_page.text and "/cancel" not in job_page.text
    assert "Replay" not in letters.text and "/replay" not in letters.text
    for path in (f"/ui/jobs/{running}/cancel", f"/ui/dead-letters/{dead}/replay",
                 "/ui/dead-letters/replay"):  # fmt: skip
        for token in (browser.csrf, ""):
            response = await browser.post(path, csrf=token, data={"ids": dead})
            assert response.status_code == 403, (path, token, response.text)
    assert (await gs.queue.get(dead)).status.value == "failed"
    assert (await gs.queue.get(running)).status.value in ("queued", "running")
    writer = Browser(gs)
    try:
        await writer.login(keys.a)
        assert 'id="cancel"' in (await writer.get(f"/ui/jobs/{running}")).text
        assert "Replay" in (await writer.get("/ui/dead-letters")).text
    finally:
        await writer.aclose()
    await gs.queue.cancel(running)  # not left for the teardown to wait out


async def test_a_tenant_key_sees_only_its_tenant(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    mine = await submit(gs, keys.a, "echo")
    theirs = await submit(gs, keys.b, "echo")
    await browser.login(keys.a)
    listed = await browser.get("/ui/jobs")
    assert mine in listed.text and theirs not in listed.text
    assert 'name="tenant"' not in listed.text  # only admins filter by tenant
    assert (await browser.get(f"/ui/jobs/{theirs}")).status_code == 404
    assert (await browser.get("/ui/jobs?tenant=beta")).status_code == 403
    live = await browser.get(f"/ui/jobs/live?ids={mine},{theirs}")
    assert mine in live.text and theirs not in live.text
    replay = await browser.post(f"/ui/dead-letters/{theirs}/replay")
    assert replay.status_code == 404
    admin = Browser(gs)
    try:
        await admin.login(keys.admin)
        both = await admin.get("/ui/jobs?tenant=beta")
        assert theirs in both.text and mine not in both.text
    finally:
        await admin.aclose()


# -- views ---------------------------------------------------------------------------------


async def test_jobs_filters_and_pages_are_in_the_url(gs: InProcess, browser: Browser) -> None:
    echo = [await submit(gs, None, "echo", f"n{i}") for i in range(7)]
    pager = [await submit(gs, None, "pager") for _ in range(2)]
    for job_id in echo + pager:
        await gs.queue.wait(job_id, 10)
    seen: list[str] = []
    url: str | None = "/ui/jobs?model=echo&limit=3"
    while url is not None:
        page = await browser.get(url)
        assert page.status_code == 200, page.text
        seen += rows(page.text)
        found = re.search(r'id="next-page" rel="next" href="([^"]+)"', page.text)
        url = found[1].replace("&amp;", "&") if found else None
        if url is not None:
            assert "model=echo" in url and "limit=3" in url and "after=job_" in url
    assert seen == echo[::-1]  # newest first, each once, across three pages
    succeeded = rows((await browser.get("/ui/jobs?status=succeeded&model=pager")).text)
    assert succeeded == pager[::-1]
    assert rows((await browser.get("/ui/jobs?status=failed")).text) == []
    assert len(rows((await browser.get("/ui/jobs?since=1h")).text)) == 9
    first = await gs.queue.get(echo[0])
    before_all = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first.created_at - 5))
    assert rows((await browser.get(f"/ui/jobs?until={before_all}")).text) == []
    assert rows((await browser.get(f"/ui/jobs?since={before_all}&model=pager")).text) == pager[::-1]
    for bad, says in (("since=yesterday", "since: "), ("limit=0", "limit: "),
                      ("after=x", "after: "), ("status=done", "status: ")):  # fmt: skip
        response = await browser.get(f"/ui/jobs?{bad}")
        assert response.status_code == 400 and says in response.text, bad


async def test_a_job_page_shows_its_timeline_of_attempts(gs: InProcess, browser: Browser) -> None:
    job_id = await submit(gs, None, "doomed")  # two attempts, each timing out
    await gs.queue.wait(job_id, 10)
    page = (await browser.get(f"/ui/jobs/{job_id}")).text
    kinds = re.findall(r'<li data-kind="(\w+)"(?: data-outcome="(\w+)")?', page)
    assert kinds == [("queued", ""), ("attempt", "failed"), ("attempt", "failed"),
                     ("terminal", "")]  # fmt: skip
    assert page.count("model_timeout") >= 2
    assert "data-live=" not in page and "gs:poll" not in page  # ended: not followed
    assert '<pre id="request">' in page and "doomed" in page


async def test_replay_answers_the_rows_and_they_follow_the_job(
    gs: InProcess, browser: Browser
) -> None:
    dead = [await submit(gs, None, "doomed", f"d{i}") for i in range(3)]
    for job_id in dead:
        await gs.queue.wait(job_id, 10)
    await browser.get("/ui/dead-letters")
    one = await browser.post(f"/ui/dead-letters/{dead[0]}/replay")
    assert one.status_code == 200, one.text
    assert rows(one.text, "dl-") == [dead[0]] and "replayed" in one.text
    assert f'data-live="dl:{dead[0]}"' in one.text  # followed by the live stream until it ends
    assert f'hx-get="/ui/dead-letters/{dead[0]}/row"' in one.text  # polled while the stream is down
    picked = await browser.post("/ui/dead-letters/replay", data={"ids": dead[1:]})
    assert picked.status_code == 200, picked.text
    assert picked.text.count('hx-swap-oob="true"') == 2 and picked.text.count("<template>") == 2

    async def failed_again() -> bool:
        row = await browser.get(f"/ui/dead-letters/{dead[0]}/row")
        return 'data-status="failed"' in row.text

    await until(failed_again)
    again = await browser.post(f"/ui/dead-letters/{dead[0]}/replay")
    twice = await browser.post(f"/ui/dead-letters/{dead[0]}/replay")  # not failed any more
    assert again.status_code == 200 and twice.status_code == 200
    assert "can be replayed" in twice.text
    nothing = await browser.post("/ui/dead-letters/replay", data={})
    assert nothing.status_code == 400 and "ids: tick at least one" in nothing.text


async def test_cancel_a_running_job_from_its_page(gs: InProcess, browser: Browser) -> None:
    job_id = await submit(gs, None, "slow")

    async def running() -> bool:
        return (await gs.queue.get(job_id)).status.value == "running"

    await until(running)
    page = (await browser.get(f"/ui/jobs/{job_id}")).text
    assert 'id="cancel"' in page and 'hx-confirm="Cancel job' in page
    response = await browser.post(f"/ui/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert 'data-status="cancelled"' in response.text and 'id="cancel"' not in response.text
    assert (await gs.queue.get(job_id)).status.value == "cancelled"
    again = await browser.post(f"/ui/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.text


async def test_the_overview_shows_each_models_queue_and_breaker(
    gs: InProcess, browser: Browser
) -> None:
    await browser.get("/ui/overview/board")  # the first sample of this process's counters
    for job_id in [await submit(gs, None, "echo") for _ in range(5)]:
        await gs.queue.wait(job_id, 10)
    slow_ids = [await submit(gs, None, "slow") for _ in range(3)]
    await asyncio.sleep(1.05)  # samples are a second apart at least
    await browser.get("/ui/overview/board")
    await asyncio.sleep(1.05)
    board = (await browser.get("/ui/overview/board")).text
    slow = re.search(r'<tr class="model" data-model="slow">(.*?)</tr>', board, re.S)
    assert slow is not None
    counts = dict(re.findall(r'data-k="(queued|running)">(\d+)<', slow[1]))
    assert int(counts["queued"]) + int(counts["running"]) == 3
    assert re.search(r'data-k="breaker">(closed|disabled)<', slow[1])
    echo = re.search(r'<tr class="model" data-model="echo">(.*?)</tr>', board, re.S)
    assert echo is not None
    peaks = [float(m) for m in re.findall(r'aria-label="last 2 samples, max ([\d.e+-]+)"', echo[1])]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)  # throughput and latency drawn
    assert echo[1].count("<polyline") == 1  # throughput's; latency's one point is no line
    assert "genspool-fanout" not in board  # genspool's own models only while busy
    # The worker of this app is alive (its heartbeat record), serving both models.
    assert re.search(r'data-k="workers">1<', slow[1]) and re.search(r'data-k="workers">1<', echo[1])
    worker = gs.worker
    assert worker is not None and f'data-worker="{worker.id}"' in board
    assert 'data-live="board" hx-get="/ui/overview/board" hx-trigger="gs:poll from:body"' in board
    for job_id in slow_ids:
        await gs.queue.cancel(job_id)
