"""``ingest``: a directory or a site into a vector store, by each document's name.

``genspool ingest docs/ --store handbook`` walks the directory; each file's source is its path
relative to the directory, so the same tree ingested from elsewhere matches. ``genspool ingest
https://example.org/sitemap.xml --store site`` crawls (robots.txt, crawl-delay, Retry-After,
retries; :class:`~genspool.rag.crawl.Crawler`), each page's source its URL. Every document goes
through :meth:`~genspool.AsyncClient.ingest_source`: its sha256 first, its bytes only when the
store does not hold them, so an unchanged tree costs no upload and no embedding.

A progress bar on stderr counts the documents as they end (files/s, errors). At the end the
counts go to stdout as LangChain names them (``num_added``, ``num_updated``, ``num_skipped``,
``num_deleted``) and each failed source to stderr with its reason; any failure exits non-zero.
A source that failed is still *kept* by ``--cleanup full``: a page that 500s today does not
lose what the store held for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genspool.cli._common import DEFAULT_API, FLAG, GLOBAL, Api, Key, app, err, out
from genspool.cli._stores import STORE_ID
from genspool.exceptions import APIConnectionError, GenspoolError, InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from genspool.client import AsyncClient, StoreFile, VectorStore

#: Documents sent at once (each a compare, and maybe an upload and a register).
IN_FLIGHT = 4
_SUFFIX = {"text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
           "text/markdown": ".md", "text/plain": ".txt"}  # fmt: skip
_KNOWN = {".html", ".htm", ".xhtml", ".pdf", ".md", ".markdown", ".txt", ".text"}
MAX_FILENAME = 200


@dataclass(frozen=True, slots=True)
class Doc:
    """One document to ingest: its name in the store, the filename it is uploaded as, bytes."""

    source: str
    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    source: str
    reason: str


@dataclass(slots=True)
class Tally:
    """The run's counts, as LangChain's ``index()`` names them, and what failed."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    deleted: int = 0
    failures: list[Failure] = field(default_factory=list)
    #: Sources seen, failed ones included (``--cleanup full`` keeps them all).
    seen: list[str] = field(default_factory=list)
    #: Files being embedded: their source and outcome (``added`` or ``updated``).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"num_added": self.added, "num_updated": self.updated,
                "num_skipped": self.skipped, "num_deleted": self.deleted}  # fmt: skip

    def ended(self, vf: StoreFile) -> None:
        source, outcome = self.waiting.pop(vf.id)
        if vf.status == "completed":
            self.added += outcome == "added"
            self.updated += outcome == "updated"
        else:
            error = vf.last_error or {}
            self.failures.append(Failure(source, str(error.get("message") or vf.status)))


@dataclass(frozen=True, slots=True)
class Options:
    glob: str
    cleanup: str
    attributes: dict[str, Any] | None
    chunking: dict[str, Any] | None
    max_pages: int
    follow: bool
    page_timeout: float
    retries: int


# -- the documents -----------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


async def _local(root: Path, glob: str) -> AsyncIterator[Doc | Failure]:
    from genspool.rag.sources import LocalFile, walk_directory

    if await asyncio.to_thread(root.is_file):
        yield Doc(root.name, root.name, await asyncio.to_thread(root.read_bytes))
        return
    async for found in walk_directory(root, glob):
        if isinstance(found, LocalFile):
            name = found.path.relative_to(root).as_posix()
            yield Doc(name, name[-MAX_FILENAME:], found.data)
        else:
            yield Failure(_relative(found.url, root), found.reason)


def _relative(path: str, root: Path) -> str:
    with contextlib.suppress(ValueError):
        return Path(path).relative_to(root).as_posix()
    return path


async def _web(url: str, opts: Options) -> AsyncIterator[Doc | Failure]:
    from genspool.rag.crawl import Crawler, Fetched

    crawler = Crawler(timeout_s=opts.page_timeout, max_retries=opts.retries)
    async for page in crawler.crawl(url, max_pages=opts.max_pages, follow=opts.follow):
        if isinstance(page, Fetched):
            yield Doc(page.url, page_filename(page.url, page.media_type), page.data)
        else:
            yield Failure(page.url, page.reason)


def page_filename(url: str, media_type: str | None) -> str:
    """A page's filename: host and path, with the suffix of its media type when the path has
    none the server reads (it chooses the reader by the suffix)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/index"
    name = f"{parts.netloc}{path.rstrip('/')}"
    kind = (media_type or "").partition(";")[0].strip().lower()
    if PurePosixPath(name).suffix.lower() not in _KNOWN and kind in _SUFFIX:
        name += _SUFFIX[kind]
    return name[-MAX_FILENAME:]


# -- the run -----------------------------------------------------------------------------------


class Run:
    """One ingest: documents sent a few at a time, then their files waited for."""

    def __init__(self, client: AsyncClient, store: VectorStore, opts: Options) -> None:
        self.client, self.store, self.opts = client, store, opts
        self.tally = Tally()
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[errors]} errors"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), console=err, transient=False,
        )  # fmt: skip
        self.task = self.bar.add_task("reading", total=None, errors=0, rate="")

    async def go(self, docs: AsyncIterator[Doc | Failure]) -> Tally:
        with self.bar:
            try:
                async with asyncio.TaskGroup() as group:
                    async for doc in docs:
                        self.tally.seen.append(doc.source)
                        await self.slots.acquire()
                        group.create_task(self.one(doc))
            except ExceptionGroup as failed:  # the store or the server: the run cannot go on
                raise failed.exceptions[0] from None
            self.show("embedding", total=len(self.tally.seen))
            waiting = list(self.tally.waiting)
            await self.client.wait_files(self.store.id, waiting, on_update=self.file_ended)
            if self.opts.cleanup == "full":
                self.show("cleaning up")
                self.tally.deleted = await self.client.cleanup_sources(
                    self.store.id, self.tally.seen
                )
            self.show("done")
        return self.tally

    async def one(self, doc: Doc | Failure) -> None:
        try:
            if isinstance(doc, Failure):
                self.failed(doc)
            else:
                await self.send(doc)
        finally:
            self.slots.release()

    async def send(self, doc: Doc) -> None:
        try:
            done = await self.client.ingest_source(
                self.store.id, doc.source, doc.data, doc.filename,
                attributes=self.opts.attributes, chunking=self.opts.chunking,
            )  # fmt: skip
        except (InvalidRequest, PayloadTooLarge) as exc:  # this document, not the run
            self.failed(Failure(doc.source, exc.message))
            return
        if done.outcome == "skipped" or done.file is None:
            self.tally.skipped += 1
            self.step()
        else:
            self.tally.waiting[done.file.id] = (doc.source, done.outcome)

    def failed(self, failure: Failure) -> None:
        self.tally.failures.append(failure)
        self.step()

    def file_ended(self, vf: StoreFile) -> None:
        self.tally.ended(vf)
        self.step()

    def step(self) -> None:
        task = self.bar.tasks[0]
        elapsed = task.elapsed or 0.0
        done = task.completed + 1
        rate = f"{done / elapsed:.1f} files/s" if elapsed > 0 else ""
        self.bar.update(self.task, advance=1, errors=len(self.tally.failures), rate=rate)

    def show(self, what: str, **more: Any) -> None:
        self.bar.update(self.task, description=what, **more)


# -- the command -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _async_client(api_url: str | None, api_key: str | None) -> AsyncIterator[AsyncClient]:
    """An asyncio client whose errors read as one line each, as ``_client``'s do."""
    from genspool.client import AsyncClient

    api_url = api_url or GLOBAL["api_url"] or DEFAULT_API
    try:
        async with AsyncClient(api_url, api_key or GLOBAL["api_key"], timeout=120) as client:
            yield client
    except APIConnectionError as exc:
        cause = exc.__cause__ or exc
        message = f"cannot reach genspool at {api_url} ({cause}); is it running?"
        raise GenspoolError(message) from exc
    except GenspoolError as exc:
        if exc.response is None:
            raise
        raise GenspoolError(f"HTTP {exc.response.status_code}: {exc.message}") from exc


async def _store(client: AsyncClient, name_or_id: str) -> VectorStore:
    """The store by id, or the one store of that name, made when no store has the name."""
    if STORE_ID.match(name_or_id):
        return await client.store(name_or_id)
    named = [s async for s in client.stores() if s.name == name_or_id]
    if len(named) > 1:
        raise GenspoolError(
            f"{len(named)} vector stores are named {name_or_id!r}; give the id of one"
            " (genspool stores list)"
        )
    return named[0] if named else await client.create_store(name_or_id)


async def _ingest(target: str, store: str, opts: Options, api: tuple[str | None, ...]) -> Tally:
    async with _async_client(*api) as client:
        found = await _store(client, store)
        docs = _web(target, opts) if _is_url(target) else _local(Path(target), opts.glob)
        return await Run(client, found, opts).go(docs)


def _attributes(pairs: list[str] | None) -> dict[str, Any] | None:
    """``--attr KEY=VALUE`` pairs; a VALUE that parses as JSON (a number, true) is that."""
    if not pairs:
        return None
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GenspoolError(f"--attr {pair}: give KEY=VALUE")
        try:
            found[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            found[key.strip()] = value
    return found


def _chunking(size: int | None, overlap: int | None) -> dict[str, Any] | None:
    from genspool.client._store_base import chunking_strategy

    if overlap is not None and size is None:
        raise GenspoolError("--chunk-overlap needs --chunk-size")
    return chunking_strategy(size, overlap)


def _check(target: str, cleanup: str, max_pages: int) -> None:
    if cleanup not in ("none", "full"):
        raise GenspoolError(f"--cleanup {cleanup}: none or full")
    if max_pages < 1:
        raise GenspoolError(f"--max-pages {max_pages}: must be 1 or more")
    if not _is_url(target) and not Path(target).exists():
        raise GenspoolError(f"{target}: no such directory (or give an http(s):// URL)")


def _report(tally: Tally) -> None:
    out.print(json.dumps(tally.counts()), markup=False, highlight=False)
    for f in tally.failures:
        err.print(f"failed: {f.source}: {f.reason}", markup=False, highlight=False)
    if tally.failures:
        n, total = len(tally.failures), len(tally.seen)
        raise GenspoolError(f"{n} of {total} sources failed")


Target = Annotated[
    str, typer.Argument(metavar="PATH|URL", help="A directory, or a page or sitemap URL.")
]
StoreOpt = Annotated[
    str, typer.Option("--store", help="The store's id or name (made if no store has the name).")
]
Glob = Annotated[str, typer.Option(help="Which files of the directory.")]
Cleanup = Annotated[
    str, typer.Option(help="none, or full: remove the sources this run did not see.")
]
Attr = Annotated[
    list[str] | None,
    typer.Option(
        "--attr", metavar="KEY=VALUE", help="An attribute of each file (repeat; JSON if it parses)."
    ),
]
ChunkSize = Annotated[int | None, typer.Option(help="Tokens per chunk (default: the server's).")]
Overlap = Annotated[int | None, typer.Option(help="Tokens neighbouring chunks share.")]
MaxPages = Annotated[int, typer.Option(help="A crawl reads at most this many pages.")]
Follow = Annotated[
    bool, typer.Option("--follow", metavar=FLAG, help="Follow a page's links on its own host.")
]
PageTimeout = Annotated[float, typer.Option(help="Seconds a page may take to answer.")]
Retries = Annotated[int, typer.Option(help="Tries again of a page that failed for a while.")]


@app.command()
def ingest(
    target: Target,
    store: StoreOpt,
    glob: Glob = "**/*",
    cleanup: Cleanup = "none",
    attr: Attr = None,
    chunk_size: ChunkSize = None,
    chunk_overlap: Overlap = None,
    max_pages: MaxPages = 1000,
    follow: Follow = False,
    page_timeout: PageTimeout = 15.0,
    retries: Retries = 3,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Ingest a directory or a site into a vector store; only what changed is sent again."""
    _check(target, cleanup, max_pages)
    opts = Options(glob, cleanup, _attributes(attr), _chunking(chunk_size, chunk_overlap),
                   max_pages, follow, page_timeout, retries)  # fmt: skip
    _report(asyncio.run(_ingest(target, store, opts, (api_url, api_key))))
