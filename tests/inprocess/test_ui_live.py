"""The web UI's live stream (``/ui/live``) and playground in process: who may open a stream and
what it carries (a tenant's key sees its tenant's jobs only, in its rows and in the new rows of
its feed), its checks of bad input, a revoked key's stream closed, the board pushed; the
playground's submits checked and counted as the API's are (scopes, CSRF, validation, registered
prompts and their variables, routes, compares as fan-outs, the key's rate limit), and a submit
on the page's channel followed from before the job exists (every token of its answer).

Streams are read with :class:`tests.helpers.sse.EventStream` (the app called as ASGI, since
httpx's transport waits for an answer's end); the browser's own view is in
tests/integration/test_ui_live.py.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from genspool.core.events import PushLimits
from genspool.core.keys import Scope
from genspool.core.models import PROMPT, SCOPES
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, FAST_RETRY, MODELS, Keys, chat_body, make_keys
from tests.helpers.sse import EventStream
from tests.inprocess.test_ui import Browser

SLOW = {"name": "slow", "provider": "echo", "options": {"latency_ms": 300},
        "batching": {"max_batch_size": 1}}  # fmt: skip
ROUTE = {
    "pattern": {"detail-type": ["prompt"]},
    "targets": [
        {"name": "first", "body": {"model": "echo", "messages": [
            {"role": "user", "content": "first: {{event.detail.prompt}}"}]}},
        {"name": "second", "body": {"model": "pager", "messages": [
            {"role": "user", "content": "second: {{event.detail.prompt}}"}]}},
    ],
}  # fmt: skip


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    limits = PushLimits(recheck_s=0.2)
    async with serve([*MODELS, SLOW], worker=True, retry=FAST_RETRY, key_cache_s=0.0,
                     push=limits) as running:  # fmt: skip
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


@pytest.fixture
async def browser(gs: InProcess) -> AsyncIterator[Browser]:
    b = Browser(gs)
    yield b
    await b.aclose()


async def submit(gs: InProcess, key: str, model: str, content: str = "hi") -> str:
    response = await gs.client.post(
        "/v1/jobs",
        json={"url": CHAT, "body": chat_body(model, content)},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def cookies(browser: Browser) -> dict[str, str]:
    return {c.name: c.value or "" for c in browser.client.cookies.jar}


def stream(gs: InProcess, browser: Browser, query: str, **headers: str) -> EventStream:
    return EventStream(gs.app, f"/ui/live?{query}", cookies(browser), headers)


# -- the stream ---------------------------------------------------------------------------


async def test_a_stream_follows_its_tenants_jobs_only(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    mine, theirs = await submit(gs, keys.a, "slow", "mine"), await submit(gs, keys.b, "slow")
    await browser.login(keys.a_read)
    async with stream(gs, browser, f"watch=row:{mine},row:{theirs}") as s:
        assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
        assert "default-src 'self'" in s.headers["content-security-policy"]
        events = await s.until_end(timeout=15)
    swaps = [data for name, data in events if name == "swap"]
    assert swaps and all(f'id="row-{mine}"' in d for d in swaps)
    assert 'data-status="succeeded"' in swaps[-1]
    assert events[-1] == ("done", "")  # nothing left to follow: the stream ends
    assert theirs not in s.raw.decode()  # another tenant's job is never drawn


async def test_a_feed_adds_the_tenants_new_jobs_that_match_the_view(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    await browser.login(keys.a_read)
    async with stream(gs, browser, "feed=jobs&model=slow") as s:
        await s.next("hello")
        theirs = await submit(gs, keys.b, "slow", "theirs")
        other = await submit(gs, keys.a, "echo", "another model")
        mine = await submit(gs, keys.a, "slow", "mine")
        _, added = await s.next("add", timeout=5)
        assert f'id="row-{mine}"' in added
        while True:  # then its states, to the end
            _, data = await s.next("swap", timeout=5)
            if f'id="row-{mine}" data-status="succeeded"' in data:
                break
    text = s.raw.decode()
    assert theirs not in text and other not in text


async def test_a_new_dead_letter_appears_on_the_dead_letters_page(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    await browser.login(keys.a)
    page = (await browser.get("/ui/dead-letters")).text
    feed = re.findall(r'data-live-feed="([^"]+)"', page)[0].replace("&amp;", "&")
    assert feed.startswith("feed=dead-letters")
    async with stream(gs, browser, feed) as s:
        await s.next("hello")
        theirs = await submit(gs, keys.b, "doomed", "theirs")
        doomed = await submit(gs, keys.a, "doomed", "mine")
        _, added = await s.next("add", timeout=10)
        assert (await gs.queue.wait(theirs, 10)).status.value == "failed"
        await asyncio.sleep(0.2)  # time to draw it, were it drawn
    assert f'id="dl-{doomed}" data-status="failed"' in added and "Replay" in added
    assert theirs not in s.raw.decode()


async def test_without_a_session_the_stream_sends_the_browser_to_log_in(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    async with EventStream(gs.app, "/ui/live?watch=board", {}) as s:
        await s.until_end()
    assert s.status == 303 and s.headers["location"].startswith("/ui/login?next=")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("watch=row:nope", "watch: 'row:nope' is neither kind:job id"),
        ("watch=table:job_1", "watch: 'table:job_1'"),
        ("watch=" + ",".join(f"row:job_{i:x}" for i in range(201)), "watch: at most 200"),
        ("feed=everything", "feed: 'everything' is not one of jobs, dead-letters"),
        ("feed=jobs&after=job_1", "feed: only a view's first page"),
        ("feed=jobs&status=done", "status: 'done' is not one of"),
    ],
)
async def test_bad_input_is_a_400_naming_it(
    gs: InProcess, browser: Browser, keys: Keys, query: str, says: str
) -> None:
    await browser.login(keys.a_read)
    response = await browser.get(f"/ui/live?{query}")
    assert response.status_code == 400, response.text
    assert says in html.unescape(response.text)


async def test_a_revoked_keys_stream_is_closed(gs: InProcess, browser: Browser) -> None:
    made, key = await gs.services.keys.create("acme", [Scope.READ])
    await browser.login(key)
    async with stream(gs, browser, "watch=board") as s:
        _, board = await s.next("swap")
        assert 'id="board"' in board  # the board, pushed
        await gs.services.keys.revoke(made.id)
        await s.until_end(timeout=5)
    assert s.raw.decode().rstrip().endswith(": this API key was revoked")


# -- the playground -------------------------------------------------------------------------


async def test_the_playground_checks_a_submit_as_the_api_does(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    await browser.login(keys.a_read, "/ui/playground")
    page = await browser.get("/ui/playground")
    assert page.status_code == 200 and 'id="no-submit"' in page.text and 'id="run"' not in page.text
    forged = await browser.post("/ui/playground", data={"target": "model:echo", "text": "hi"})
    assert forged.status_code == 403 and "lacks the &#39;submit&#39; scope" in forged.text
    await browser.login(keys.limited, "/ui/playground")  # acme; submit, read; 3 a minute
    page = await browser.get("/ui/playground")
    assert 'value="model:echo"' in page.text and "genspool-fanout" not in page.text
    assert (await browser.post("/ui/playground", csrf="", data={"text": "x"})).status_code == 403
    good = {"target": "model:echo", "text": "hello there", "max_tokens": "16"}
    answers = [await browser.post("/ui/playground", data=good) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # the key's rpm holds
    await browser.login(keys.a, "/ui/playground")  # the same tenant, no rate limit
    await browser.get("/ui/playground")
    bad = {
        "target: choose a model": {"target": "echo", "text": "hi"},
        "text: write a prompt": {"target": "model:echo", "text": "  "},
        "max_tokens: a whole number": {"target": "model:echo", "text": "hi", "max_tokens": "0"},
        "genspool&#39;s own model": {"target": "model:genspool-fanout", "text": "hi"},
        "unknown model &#39;nope&#39;": {"target": "model:nope", "text": "hi"},
    }
    for says, form in bad.items():
        response = await browser.post("/ui/playground", data=form)
        assert response.status_code in (400, 404), (says, response.text)
        assert says in response.text, (says, response.text)
    job_id = re.findall(r'id="play-(job_[0-9a-f]+)"', answers[0].text)[0]
    job = await gs.queue.wait(job_id, 10)
    assert job.tenant == "acme" and job.body["messages"][-1]["content"] == "hello there"
    assert job.body["max_tokens"] == 16 and job.metadata[SCOPES] == ["read", "submit"]
    shown = (await browser.get(f"/ui/playground/jobs/{job_id}")).text
    assert 'data-status="succeeded"' in shown and ">hello there</pre>" in shown


async def test_a_registered_prompt_a_route_and_a_compare(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    prompt = {"id": "greet", "template": [{"role": "user", "content": "Hello {{name}}!"}]}
    made = await gs.client.post(
        "/v1/prompts", json=prompt, headers={"Authorization": f"Bearer {keys.a}"}
    )
    assert made.status_code == 201, made.text
    route = await gs.client.put(
        "/v1/routes/two", json=ROUTE, headers={"Authorization": f"Bearer {keys.admin}"}
    )
    assert route.status_code in (200, 201), route.text
    await browser.login(keys.a, "/ui/playground")
    page = await browser.get("/ui/playground")
    assert '<option value="greet">' in page.text and 'value="route:two"' in page.text
    fields = await browser.get("/ui/playground/prompt?prompt=greet")
    assert 'name="var.name"' in fields.text and "latest (v1)" in fields.text
    missing = await browser.post("/ui/playground", data={"target": "model:echo", "prompt": "greet"})
    assert missing.status_code == 400 and "prompt.variables: missing &#39;name&#39;" in missing.text
    ran = await browser.post(
        "/ui/playground", data={"target": "model:echo", "prompt": "greet", "var.name": "Ada"}
    )
    job_id = re.findall(r'id="play-(job_[0-9a-f]+)"', ran.text)[0]
    job = await gs.queue.wait(job_id, 10)
    assert job.body["messages"] == [{"role": "user", "content": "Hello Ada!"}]
    assert job.metadata[PROMPT] == {"id": "greet", "version": 1}
    routed = await browser.post("/ui/playground", data={"target": "route:two", "text": "tea"})
    assert routed.status_code == 200, routed.text
    parent = await gs.queue.wait(re.findall(r'id="fan-(job_[0-9a-f]+)"', routed.text)[0], 10)
    assert parent.result is not None
    assert parent.result["body"]["output"] == {
        "two.first": "first: tea",
        "two.second": "second: tea",
    }
    compared = await browser.post(
        "/ui/playground/compare", data={"models": ["echo", "pager"], "text": "same"}
    )
    assert compared.text.count('class="column"') == 2 and 'data-state="waiting"' in compared.text
    fan_id = re.findall(r'id="fan-(job_[0-9a-f]+)"', compared.text)[0]
    fan = await gs.queue.wait(fan_id, 10)
    assert [b["body"]["model"] for b in fan.body["branches"]] == ["echo", "pager"]
    shown = (await browser.get(f"/ui/playground/fanouts/{fan_id}")).text
    assert shown.count('data-state="succeeded"') == 2 and shown.count(">same</pre>") == 2
    none = await browser.post("/ui/playground/compare", data={"text": "same"})
    assert none.status_code == 400 and "models: tick the models" in none.text


async def test_a_submit_on_the_pages_channel_streams_every_token(
    gs: InProcess, browser: Browser, keys: Keys
) -> None:
    await browser.login(keys.a, "/ui/playground")
    await browser.get("/ui/playground")
    text = "one two three four five six"
    form = {"target": "model:slow", "text": text}
    async with stream(gs, browser, "watch=playground") as s:
        _, channel = await s.next("hello")
        response = await browser.client.post(
            "/ui/playground", data=form,
            headers={"X-CSRF-Token": browser.csrf, "HX-Request": "true", "X-Live-Channel": channel},
        )  # fmt: skip
        assert f'data-live-on="{channel}"' in response.text  # followed on the page's stream
        job_id = re.findall(r'id="play-(job_[0-9a-f]+)"', response.text)[0]
        deltas: list[str] = []
        while True:
            name, data = await s.next()
            if name == "delta":
                event: dict[str, Any] = orjson.loads(data)
                assert event["id"] == job_id
                deltas.append(event["text"])
            elif name == "swap" and f'id="play-{job_id}"' in data:
                break  # the answer, ended
    assert "".join(deltas) == text and len(deltas) == 6
    assert f">{text}</pre>" in data and 'data-status="succeeded"' in data
    # Another browser session cannot have its job followed on this page's stream.
    other = Browser(gs)
    try:
        await other.login(keys.a, "/ui/playground")
        await other.get("/ui/playground")
        async with stream(gs, browser, "watch=playground") as s:
            _, channel = await s.next("hello")
            response = await other.client.post(
                "/ui/playground", data=form,
                headers={"X-CSRF-Token": other.csrf, "X-Live-Channel": channel},
            )  # fmt: skip
            assert response.status_code == 200 and "data-live-on" not in response.text
    finally:
        await other.aclose()
