"""``/ui/vector-stores``: vector stores with their file counts, one store's files (status,
chunks, size, why one failed), and a search box.

Through the service the vector stores API uses (:class:`~genspool.rag.service.VectorStores`),
tenant-scoped as it is (another tenant's store is a 404). A search is a read (``read``, as
``POST /v1/vector_stores/{id}/search`` is): the same search, by the store's own embedding
model, answered as a fragment of results, each with its score, file and an excerpt of its
text. A store whose files are still being ingested polls its file table every 2 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.ui.common import cursor, need
from genspool.api.ui.pages import render
from genspool.api.ui.session import UiCaller, ui_requires
from genspool.core.keys import Scope
from genspool.core.vectors import VectorStore, VectorStoreFile
from genspool.exceptions import InvalidRequest, NotFound
from genspool.rag.search import Hit
from genspool.rag.service import VectorStores

__all__ = ["MAX_QUERY", "RESULTS", "router"]

router = APIRouter(include_in_schema=False)

PAGE = 20
FILES = 50
#: The search box's longest query, and the choices of how many results.
MAX_QUERY = 2000
RESULTS = (5, 10, 20, 50)
_EXCERPT = 600


@dataclass(frozen=True, slots=True)
class StoreRow:
    store: VectorStore
    counts: dict[str, int]

    @property
    def status(self) -> str:
        if self.store.status == "expired":
            return "expired"
        return "in_progress" if self.counts.get("in_progress") else "completed"


@dataclass(frozen=True, slots=True)
class FileRow:
    file: VectorStoreFile
    filename: str | None


def _stores(request: Request) -> VectorStores:
    return need(services(request).vector_stores, "vector stores")


async def _row(stores: VectorStores, store: VectorStore) -> StoreRow:
    return StoreRow(store, await stores.counts(store))


@router.get("/vector-stores")
@ui_requires(Scope.READ)
async def stores_page(request: Request, caller: UiCaller, after: str | None = None) -> Response:
    stores = _stores(request)
    page = await stores.page(caller.sees, after=cursor(after), limit=PAGE, order="desc")
    rows = [await _row(stores, s) for s in page.data]
    return await render(
        request, "stores.html", caller, rows=rows, after=after,
        next_after=page.data[-1].id if page.has_more and page.data else None,
        now=services(request).queue.clock(),
    )  # fmt: skip


async def _files(
    request: Request, caller: Caller, store_id: str, after: str | None
) -> dict[str, Any]:
    stores = _stores(request)
    page = await stores.file_page(
        store_id, caller.sees, status=None, after=cursor(after), limit=FILES, order="desc"
    )
    rows = [FileRow(vf, await _filename(request, vf)) for vf in page.data]
    return {
        "files": rows,
        "files_after": after,
        "files_next": page.data[-1].id if page.has_more and page.data else None,
        "ingesting": any(not r.file.terminal for r in rows),
    }


async def _filename(request: Request, vf: VectorStoreFile) -> str | None:
    """The document's name (its Files API record's), or None once that file is gone."""
    try:
        return (await _stores(request).files.get(vf.id, vf.tenant)).filename
    except NotFound:
        return vf.source


@router.get("/vector-stores/{store_id}")
@ui_requires(Scope.READ)
async def store_page(
    request: Request,
    caller: UiCaller,
    store_id: str,
    after: str | None = None,
    q: str | None = None,
    k: int = 10,
) -> Response:
    stores = _stores(request)
    row = await _row(stores, await stores.get(store_id, caller.sees))
    files = await _files(request, caller, store_id, after)
    hits = await _search(request, caller, store_id, q, k) if q else None
    return await render(
        request, "store.html", caller, row=row, s=row.store, **files, hits=hits, q=q or "", k=k,
        results=RESULTS, now=services(request).queue.clock(),
    )  # fmt: skip


@router.get("/vector-stores/{store_id}/files")
@ui_requires(Scope.READ)
async def files_fragment(
    request: Request, caller: UiCaller, store_id: str, after: str | None = None
) -> Response:
    s = await _stores(request).get(store_id, caller.sees)
    files = await _files(request, caller, store_id, after)
    now = services(request).queue.clock()
    return await render(request, "_store_files.html", caller, s=s, **files, now=now)


async def _search(
    request: Request, caller: Caller, store_id: str, q: str | None, k: int
) -> list[dict[str, Any]]:
    query = (q or "").strip()
    if not query:
        raise InvalidRequest("q: write what to search for", param="q")
    if len(query) > MAX_QUERY:
        raise InvalidRequest(f"q: at most {MAX_QUERY} characters", param="q")
    if k not in RESULTS:
        raise InvalidRequest(f"k: one of {', '.join(map(str, RESULTS))}", param="k")
    hits = await _stores(request).search(store_id, caller.sees, query, k=k)
    return [_hit(h) for h in hits]


def _hit(h: Hit) -> dict[str, Any]:
    text = h.chunk.text
    return {
        "score": h.score,
        "file_id": h.chunk.file_id,
        "filename": h.filename,
        "seq": h.chunk.seq,
        "page": h.chunk.page,
        "headings": list(h.chunk.headings),
        "text": text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…",
    }


@router.get("/vector-stores/{store_id}/search")
@ui_requires(Scope.READ)
async def search(
    request: Request, caller: UiCaller, store_id: str, q: str | None = None, k: int = 10
) -> Response:
    """The results of a search as a fragment (the search box's target)."""
    hits = await _search(request, caller, store_id, q, k)
    return await render(request, "_search_results.html", caller, hits=hits, q=q or "")
