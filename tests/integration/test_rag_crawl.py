"""The crawler against real local HTTP servers: robots.txt with a Crawl-delay, a sitemap, a page
that 500s then recovers, a 429 with Retry-After, a page that never answers in time — the crawl
completes, each failed page is listed with its reason, and the servers' own clocks show the
delay and the per-host concurrency were kept."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genspool.rag.crawl import Crawler, Failed, Fetched, crawl_delay, retry_after

Route = Callable[["Site", str], tuple[int, dict[str, str], bytes]]

ROBOTS = "User-agent: *\nDisallow: /private\nCrawl-delay: 0.2\n"
PAGES = ["/p1", "/p2", "/flaky", "/limited", "/slow", "/private/secret", "/missing"]


@dataclass
class Site:
    """A local HTTP server that records when each request arrived and how many were in flight."""

    routes: Route
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.arrivals.append((time.monotonic(), path))
            self.hits[path] = self.hits.get(path, 0) + 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return self.routes(self, path)
        finally:
            with self.lock:
                self.in_flight -= 1

    def times(self, path: str) -> list[float]:
        return [t for t, p in self.arrivals if p == path]


def html(title: str) -> tuple[int, dict[str, str], bytes]:
    body = f"<html><body><article><h1>{title}</h1><p>Text of {title}.</p></article></body></html>"
    return 200, {"content-type": "text/html; charset=utf-8"}, body.encode()


def main_site(site: Site, path: str) -> tuple[int, dict[str, str], bytes]:
    if path == "/robots.txt":
        return 200, {"content-type": "text/plain"}, ROBOTS.encode()
    if path == "/sitemap.xml":
        urls = "".join(f"<url><loc>{site.url}{page}</loc></url>" for page in PAGES)
        xmlns = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
        body = f'<?xml version="1.0" encoding="UTF-8"?><urlset {xmlns}>{urls}</urlset>'
        return 200, {"content-type": "application/xml"}, body.encode()
    if path == "/flaky" and site.hits[path] <= 2:
        return 500, {}, b"try again"
    if path == "/limited" and site.hits[path] == 1:
        return 429, {"retry-after": "1"}, b"slow down"
    if path == "/slow":
        time.sleep(1.5)
    if path == "/missing":
        return 404, {}, b"no such page"
    return html(path)


def busy_site(site: Site, path: str) -> tuple[int, dict[str, str], bytes]:
    if path == "/robots.txt":
        return 404, {}, b""
    time.sleep(0.3)
    return html(path)


@pytest.fixture
def serve() -> Iterator[Callable[[Route], Site]]:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: Route) -> Site:
        site = Site(routes)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = site.handle(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                # the client may have given up already (a timeout)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        site.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return site

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_a_crawl_completes_listing_each_failed_page_with_its_reason(
    serve: Callable[[Route], Site],
) -> None:
    main, busy = serve(main_site), serve(busy_site)
    crawler = Crawler(max_per_host=2, timeout_s=0.5, max_retries=2, backoff_s=0.05, seed=1)
    busy_pages = [f"{busy.url}/b{i}" for i in range(6)]

    began = time.monotonic()
    results = [r async for r in crawler.crawl([f"{main.url}/sitemap.xml", *busy_pages])]
    took = time.monotonic() - began

    fetched = {r.url: r for r in results if isinstance(r, Fetched)}
    failed = {r.url.removeprefix(main.url): r.reason for r in results if isinstance(r, Failed)}
    assert len(results) == len(PAGES) + len(busy_pages)  # the sitemap itself is no page
    assert set(fetched) == {main.url + p for p in ["/p1", "/p2", "/flaky", "/limited"]} | set(
        busy_pages
    )
    assert failed == {
        "/slow": "timed out after 0.5 s (after 3 attempts)",
        "/private/secret": "disallowed by robots.txt",
        "/missing": "HTTP 404 Not Found",
    }
    assert b"Text of /flaky." in fetched[main.url + "/flaky"].data
    assert fetched[main.url + "/p1"].media_type == "text/html; charset=utf-8"
    assert took < 15

    # robots.txt: read first, its Disallow obeyed, its Crawl-delay kept between requests
    assert main.arrivals[0][1] == "/robots.txt"
    assert "/private/secret" not in main.hits
    starts = [t for t, path in main.arrivals if path != "/robots.txt"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Kept between sends; an arrival noted late (a loaded machine) shortens the gap after it,
    # never the pace: each request starts at least 0.2 s a request after the first, and no gap
    # is shorter than 0.2 s less that lateness (50 ms here).
    assert all(t - starts[0] >= 0.2 * i - 0.05 for i, t in enumerate(starts)), gaps
    assert min(gaps) >= 0.15, gaps

    # 500 twice then recovered; 429 retried only after its Retry-After
    assert main.hits["/flaky"] == 3 and main.hits["/limited"] == 2
    first, second = main.times("/limited")
    assert second - first >= 0.95
    assert main.hits["/slow"] == 3  # timed out, retried, then listed

    # per-host concurrency: two at a time on the host without a delay, never more
    assert busy.most_in_flight == 2


async def test_max_pages_and_follow_stay_on_the_host(serve: Callable[[Route], Site]) -> None:
    def linked(site: Site, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/robots.txt":
            return 404, {}, b""
        links = "".join(f'<a href="/n{i}#top">n{i}</a>' for i in range(10))
        away = '<a href="http://127.0.0.2:9/elsewhere">away</a>'
        return (
            200,
            {"content-type": "text/html"},
            f"<html><body>{links}{away}</body></html>".encode(),
        )

    site = serve(linked)
    crawler = Crawler(max_per_host=2, timeout_s=2)

    alone = [r async for r in crawler.crawl(site.url + "/")]
    followed = [r async for r in crawler.crawl(site.url + "/", follow=True, max_pages=4)]

    assert [r.url for r in alone] == [site.url + "/"]
    assert len(followed) == 4 and all(isinstance(r, Fetched) for r in followed)
    assert all(r.url.startswith(site.url) for r in followed)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    assert retry_after("soon") is None and retry_after(None) is None


def test_crawl_delay_reads_fractions_for_our_group_first() -> None:
    robots = "User-agent: *\nCrawl-delay: 2\n\nUser-agent: genspool\nCrawl-delay: 0.25\n"
    assert crawl_delay(robots, "genspool/0.1") == 0.25
    assert crawl_delay(robots, "otherbot") == 2
    assert crawl_delay("User-agent: *\nDisallow: /x\n", "genspool") == 0
