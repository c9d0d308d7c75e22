"""Debian's chromium driven by Playwright for the web UI's tests: launched without its own
traffic, and pages in fresh contexts that are watched — every request (one leaving loopback is
aborted and recorded), every answer under /ui without its CSP, every complaint of the browser,
the main frame's navigations — and checked when the test ends."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright import sync_api

__all__ = ["LOOPBACK", "QUIET", "OpenPage", "Watch", "chromium", "watched_pages"]

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Chromium without its own traffic (updates, safe browsing, metrics): only the page's.
QUIET = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
]


@dataclass
class Watch:
    """What a browser context did: every request, the answers under /ui without a CSP, the
    browser's complaints, and the main frame's navigations."""

    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    no_csp: list[str] = field(default_factory=list)
    complaints: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)


OpenPage = Callable[[], tuple[sync_api.Page, Watch]]


def _path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "no chromium on this machine (apt-get install chromium)"
        if os.environ.get("CI") == "true":  # CI installs it (.ci/run): missing is a failure
            pytest.fail(why)
        pytest.skip(why)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[sync_api.Browser]:
    """The system's chromium, headless and quiet, for as long as the block runs."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_path(), headless=True, args=QUIET)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def watched_pages(browser: sync_api.Browser, **options: Any) -> Iterator[OpenPage]:
    """Yields a maker of pages, each in a fresh context (own cookies; ``options`` for the
    context) and watched; at the end no request left loopback, every answer under /ui had its
    CSP, and the browser complained of nothing."""
    made: list[tuple[sync_api.BrowserContext, Watch]] = []

    def new() -> tuple[sync_api.Page, Watch]:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
        watch = Watch()
        context.route("**/*", lambda route: _only_loopback(route, watch))
        context.on("response", lambda response: _csp_seen(response, watch))
        page = context.new_page()
        page.on("console", lambda m: _complaint(m, watch))
        page.on("pageerror", lambda e: watch.complaints.append(f"page error: {e}"))
        page.on(
            "framenavigated",
            lambda frame: watch.navigations.append(frame.url) if frame == page.main_frame else None,
        )
        made.append((context, watch))
        return page, watch

    yield new
    for context, watch in made:
        context.close()
        assert watch.outside == [], f"requests left loopback: {watch.outside}"
        assert watch.no_csp == [], f"answers under /ui without a CSP: {watch.no_csp}"
        assert watch.complaints == [], f"the browser complained: {watch.complaints}"


def _only_loopback(route: sync_api.Route, watch: Watch) -> None:
    url = route.request.url
    watch.requests.append(url)
    host = urlsplit(url).hostname or ""
    if url.startswith(("http:", "https:", "ws:", "wss:")) and host not in LOOPBACK:
        watch.outside.append(url)
        route.abort()
    else:
        route.continue_()


def _csp_seen(response: sync_api.Response, watch: Watch) -> None:
    if not urlsplit(response.url).path.startswith("/ui"):
        return
    csp = response.headers.get("content-security-policy", "")
    framing = response.headers.get("x-frame-options", "")
    if "default-src 'self'" not in csp or "frame-ancestors 'none'" not in csp or framing != "DENY":
        watch.no_csp.append(f"{response.status} {response.url}")


def _complaint(message: sync_api.ConsoleMessage, watch: Watch) -> None:
    text = message.text
    # A 4xx a test provokes on purpose shows up as a failed resource: not a complaint.
    failed = message.type == "error" and "Failed to load resource" not in text
    if failed or "Content Security Policy" in text or "Refused to" in text:
        watch.complaints.append(text)
