"""``/docs`` renders with the network cut: a real ``genspool serve`` and the system's headless
Chromium, driven by Playwright, with every request to an address other than loopback aborted.
A screenshot of the rendered page goes to ``test-artifacts/docs.png``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tests.helpers.browser import chromium
from tests.helpers.processes import Spawner

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
MODELS = [{"name": "echo", "provider": "echo"}]


def test_docs_render_offline(spawner: Spawner) -> None:
    server = spawner.server(MODELS)
    outside: list[str] = []

    def only_loopback(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        host = urlsplit(url).hostname or ""
        if url.startswith(("http://", "https://")) and not host.startswith(LOOPBACK):
            outside.append(url)
            route.abort()  # type: ignore[attr-defined]
        else:
            route.continue_()  # type: ignore[attr-defined]

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.route("**/*", only_loopback)
        page.goto(f"{server.url}/docs", wait_until="networkidle")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        title = page.locator(".info .title").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=False)
    assert outside == [], f"the docs page asked for outside resources: {outside}"
    assert title.startswith("genspool")
    assert {"/v1/chat/completions", "/v1/jobs", "/v1/jobs/{job_id}"} <= {
        p.replace("\u200b", "") for p in paths
    }
