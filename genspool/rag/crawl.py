"""Fetching web pages and sitemaps politely, listing each page that fails while the crawl goes on.

Per host (an origin: scheme, host and port, the scope of a robots.txt) the :class:`Crawler`
keeps at most ``max_per_host`` requests in flight and starts them at least
``max(rate_per_host_s, Crawl-delay)`` seconds apart. robots.txt is read once per host before
anything else is fetched from it, and obeyed as RFC 9309 says: a 4xx means no rules, a server
error or no answer means the whole site is off-limits (each page is then listed as failed with
that reason).

A 429, or a 503 with ``Retry-After`` (seconds or an HTTP date), holds the whole host off for
that long (capped by ``retry_after_cap_s``) — the server said it is overloaded, not that one page
is. Other 5xx answers, 408, timeouts and broken connections are retried ``max_retries`` times
after an exponential backoff with jitter, and the backoff is spent outside the host's slot, so
the host's other pages go on meanwhile. Any other 4xx fails at once. A page that still fails is
yielded as :class:`Failed` with its reason; the crawl never stops for one page.

A start URL whose answer is a sitemap (``<urlset>``, or a ``<sitemapindex>`` of sitemaps, gzip
allowed) is expanded into its pages instead of being yielded itself. Links found in pages are
followed only with ``follow=True``, and then only on the page's own host.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import io
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser
from xml.etree.ElementTree import ParseError

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

__all__ = ["CrawlResult", "Crawler", "Failed", "Fetched", "crawl_delay", "retry_after"]


@dataclass(frozen=True, slots=True)
class Fetched:
    """A page as the server sent it. ``media_type`` is the Content-Type header (with its
    charset, which :func:`genspool.rag.documents.extract` reads), or None when there was none."""

    url: str
    status: int
    data: bytes
    media_type: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """A source that could not be had: a URL (or a file's path) and why, for the run's report.
    ``status`` is the last HTTP status when there was one."""

    url: str
    reason: str
    status: int | None = None


CrawlResult = Fetched | Failed

_Kind = Literal["start", "sitemap", "page"]  # a start URL may turn out to be a sitemap
_MAX_SITEMAP_DEPTH = 3  # sitemap index → sitemap → pages; deeper nesting is ignored


class _Retry(Exception):
    """An attempt failed in a way worth trying again; ``wait`` None means the usual backoff."""

    def __init__(self, reason: str, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.wait = reason, status, wait


class Crawler:
    """Fetches URLs and sitemaps with per-host limits, robots.txt and retries (see the module)."""

    def __init__(
        self,
        *,
        max_per_host: int = 2,
        rate_per_host_s: float = 0.0,
        timeout_s: float = 15.0,
        max_retries: int = 3,
        user_agent: str = "genspool",
        retry_after_cap_s: float = 60.0,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_bytes: int = 20_000_000,
        max_connections: int = 8,
        seed: int | None = None,
    ) -> None:
        self.max_per_host = max_per_host
        self.rate_per_host_s = rate_per_host_s
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.user_agent = user_agent
        self.retry_after_cap_s = retry_after_cap_s
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self._random = random.Random(seed)

    async def crawl(
        self, start: str | Iterable[str], *, max_pages: int = 1000, follow: bool = False
    ) -> AsyncIterator[CrawlResult]:
        """Each page's :class:`Fetched` or :class:`Failed`, as they complete; at most
        ``max_pages`` pages (sitemaps and robots.txt do not count)."""
        starts = [start] if isinstance(start, str) else list(start)
        async with httpx.AsyncClient(
            headers={"user-agent": self.user_agent},
            timeout=self.timeout_s,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=self.max_connections),
        ) as client:
            run = _Run(self, client, max_pages, follow)
            async for result in run.results(starts):
                yield result

    def backoff(self, attempt: int) -> float:
        """Exponential, with equal jitter: half the delay fixed, half random."""
        delay = min(self.backoff_cap_s, self.backoff_s * 2**attempt)
        return float(delay / 2 + self._random.uniform(0, delay / 2))


class _Host:
    """One origin's robots rules, request slots and pacing."""

    def __init__(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.interval = 0.0
        self.next_start = 0.0
        self.robots: _Robots | None = None
        self.robots_lock = asyncio.Lock()
        self._pace = asyncio.Lock()

    async def turn(self) -> None:
        """Wait until this host may be sent its next request."""
        async with self._pace:
            while (delay := self.next_start - time.monotonic()) > 0:
                await asyncio.sleep(delay)  # a Retry-After may push next_start on meanwhile
            self.next_start = time.monotonic() + self.interval

    def hold_off(self, seconds: float) -> None:
        self.next_start = max(self.next_start, time.monotonic() + seconds)


@dataclass(frozen=True, slots=True)
class _Robots:
    parser: RobotFileParser | None  # None: no rules
    delay: float = 0.0
    blocked: str | None = None  # why the whole site is off-limits

    def refusal(self, agent: str, url: str) -> str | None:
        if self.blocked:
            return self.blocked
        if self.parser is not None and not self.parser.can_fetch(agent, url):
            return "disallowed by robots.txt"
        return None


class _Run:
    """One crawl: the frontier, the hosts and the results, worked by a few tasks."""

    def __init__(
        self, crawler: Crawler, client: httpx.AsyncClient, max_pages: int, follow: bool
    ) -> None:
        self.crawler, self.client = crawler, client
        self.max_pages, self.follow = max_pages, follow
        self.hosts: dict[str, _Host] = {}
        self.seen: set[str] = set()
        self.pages = 0
        self.pending = 0
        self.frontier: asyncio.Queue[tuple[str, _Kind, int]] = asyncio.Queue()
        self.out: asyncio.Queue[CrawlResult | BaseException | None] = asyncio.Queue()

    async def results(self, starts: list[str]) -> AsyncIterator[CrawlResult]:
        for url in starts:
            self.add(url, "start")
        if not self.pending:
            return
        workers = [asyncio.create_task(self.work()) for _ in range(self.crawler.max_connections)]
        try:
            while (item := await self.out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def add(self, url: str, kind: _Kind, depth: int = 0) -> None:
        url = urldefrag(url.strip())[0]
        if urlsplit(url).scheme not in ("http", "https") or url in self.seen:
            return
        if kind != "sitemap":
            if self.pages >= self.max_pages:
                return
            self.pages += 1
        self.seen.add(url)
        self.pending += 1
        self.frontier.put_nowait((url, kind, depth))

    async def work(self) -> None:
        while True:
            url, kind, depth = await self.frontier.get()
            try:
                await self.visit(url, kind, depth)
            except Exception as exc:  # a bug, not a failing page: end the crawl with it
                self.out.put_nowait(exc)
            self.pending -= 1
            if self.pending == 0:
                self.out.put_nowait(None)

    async def visit(self, url: str, kind: _Kind, depth: int) -> None:
        host = self.host(url)
        refusal = (await self.robots(host, url)).refusal(self.crawler.user_agent, url)
        result = Failed(url, refusal) if refusal else await self.fetch(host, url)
        if isinstance(result, Fetched) and kind != "page":
            if self.expand(result, kind, depth):
                return
            if kind == "sitemap":
                result = Failed(url, "not a sitemap (no <urlset> or <sitemapindex>)", result.status)
        self.out.put_nowait(result)
        if self.follow and isinstance(result, Fetched):
            for link in _same_host_links(result):
                self.add(link, "page")

    def expand(self, page: Fetched, kind: _Kind, depth: int) -> bool:
        """Queue a sitemap's pages (True), or say the answer is no sitemap (False)."""
        found = _sitemap(page.data, self.crawler.max_bytes)
        if found is None:
            return False
        if kind == "start":
            self.pages -= 1  # counted as a page when queued; it is a sitemap
        children, pages = found
        for child in children if depth < _MAX_SITEMAP_DEPTH else ():
            self.add(child, "sitemap", depth + 1)
        for url in pages:
            self.add(url, "page")
        return True

    def host(self, url: str) -> _Host:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.hosts:
            self.hosts[origin] = _Host(self.crawler.max_per_host)
        return self.hosts[origin]

    # -- robots.txt -----------------------------------------------------------------------------

    async def robots(self, host: _Host, url: str) -> _Robots:
        async with host.robots_lock:
            if host.robots is None:
                parts = urlsplit(url)
                answer = await self.fetch(host, f"{parts.scheme}://{parts.netloc}/robots.txt")
                host.robots = _robots(answer, self.crawler.user_agent)
                host.interval = max(self.crawler.rate_per_host_s, host.robots.delay)
            return host.robots

    # -- fetching -------------------------------------------------------------------------------

    async def fetch(self, host: _Host, url: str) -> Fetched | Failed:
        """One URL, retried as the module says; never raises for a failing page."""
        tries = self.crawler.max_retries + 1
        for attempt in range(tries):
            try:
                return await self.attempt(host, url)
            except _Retry as retry:
                if attempt + 1 == tries:
                    return Failed(url, f"{retry.reason} (after {tries} attempts)", retry.status)
                wait = retry.wait if retry.wait is not None else self.crawler.backoff(attempt)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def attempt(self, host: _Host, url: str) -> Fetched | Failed:
        async with host.slots:
            await host.turn()
            try:
                async with asyncio.timeout(self.crawler.timeout_s):
                    return await self.get(host, url)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise _Retry(f"timed out after {self.crawler.timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from exc

    async def get(self, host: _Host, url: str) -> Fetched | Failed:
        async with self.client.stream("GET", url) as response:
            status = response.status_code
            self.check(host, response)
            if status >= 400:
                return Failed(url, f"HTTP {status} {response.reason_phrase}", status)
            data = await _body(response, self.crawler.max_bytes)
            if data is None:
                return Failed(url, f"larger than {self.crawler.max_bytes} bytes", status)
            return Fetched(url, status, data, response.headers.get("content-type"))

    def check(self, host: _Host, response: httpx.Response) -> None:
        """Raise :class:`_Retry` for an answer worth trying again; a Retry-After of a 429 or
        503 holds the host off, and the retry waits its turn there."""
        status = response.status_code
        reason = f"HTTP {status} {response.reason_phrase}"
        wait = retry_after(response.headers.get("retry-after"))
        if status in (429, 503) and wait is not None:
            host.hold_off(min(wait, self.crawler.retry_after_cap_s))
            raise _Retry(f"{reason} (Retry-After {wait:g} s)", status, wait=0.0)
        if status >= 500 or status in (408, 429):
            raise _Retry(reason, status)


async def _body(response: httpx.Response, limit: int) -> bytes | None:
    buffer = bytearray()
    async for piece in response.aiter_bytes():
        buffer += piece
        if len(buffer) > limit:
            return None
    return bytes(buffer)


# -- parsing --------------------------------------------------------------------------------------


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date); None
    when absent or unreadable. A date in the past means no wait."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def crawl_delay(robots_txt: str, user_agent: str) -> float:
    """The ``Crawl-delay`` of the group that names ``user_agent``, else of ``*``; 0 if none.

    urllib.robotparser reads only whole seconds (``Crawl-delay: 0.5`` is dropped), so the
    groups are read here."""
    token = user_agent.split("/")[0].lower()
    mine: list[float] = []
    anyone: list[float] = []
    for agents, delay in _groups(robots_txt):
        if delay is None:
            continue
        if any(agent != "*" and agent in token for agent in agents):
            mine.append(delay)
        elif "*" in agents:
            anyone.append(delay)
    return (mine or anyone or [0.0])[0]


def _groups(robots_txt: str) -> list[tuple[list[str], float | None]]:
    """(user agents, Crawl-delay) of each group of a robots.txt."""
    groups: list[tuple[list[str], float | None]] = []
    agents: list[str] = []
    delay: float | None = None
    rules = False
    for raw in robots_txt.splitlines():
        key, _, value = raw.split("#", 1)[0].partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if rules:
                groups.append((agents, delay))
                agents, delay, rules = [], None, False
            agents.append(value.lower())
        elif agents and key:
            rules = True
            if key == "crawl-delay":
                with contextlib.suppress(ValueError):
                    delay = max(0.0, float(value)) if float(value) < float("inf") else None
    if agents:
        groups.append((agents, delay))
    return groups


def _robots(answer: Fetched | Failed, user_agent: str) -> _Robots:
    if isinstance(answer, Failed):
        if answer.status is not None and 400 <= answer.status < 500:
            return _Robots(None)
        return _Robots(None, blocked=f"robots.txt could not be read ({answer.reason})")
    text = answer.data.decode("utf-8", errors="replace")
    parser = RobotFileParser()
    parser.parse(text.splitlines())
    return _Robots(parser, crawl_delay(text, user_agent))


def _sitemap(data: bytes, limit: int) -> tuple[list[str], list[str]] | None:
    """(child sitemaps, pages) of a sitemap or sitemap index; None when ``data`` is neither."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.GzipFile(fileobj=io.BytesIO(data)).read(limit + 1)[:limit]
        except (OSError, EOFError):
            return None
    if data.lstrip()[:1] != b"<":
        return None
    try:
        root = fromstring(data)
    except (ParseError, DefusedXmlException):
        return None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        return None
    locations = [el.text.strip() for el in root.iter() if _local(el.tag) == "loc" and el.text]
    return (locations, []) if kind == "sitemapindex" else ([], locations)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.hrefs.append(href)


def _same_host_links(page: Fetched) -> list[str]:
    if "html" not in (page.media_type or ""):
        return []
    parser = _Links()
    parser.feed(page.data.decode("utf-8", errors="replace"))
    origin = urlsplit(page.url).netloc
    links = (urldefrag(urljoin(page.url, href))[0] for href in parser.hrefs)
    return [link for link in links if urlsplit(link).netloc == origin]
