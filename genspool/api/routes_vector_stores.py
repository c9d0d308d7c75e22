"""Vector stores, wire-compatible with OpenAI's, so ``client.vector_stores`` of the official SDK
works unchanged: stores, their files, file batches (and the SDK's ``upload_and_poll`` /
``create_and_poll``: the ``openai-poll-after-ms`` header says how often to ask) and search.

Every store is tenant-scoped: another tenant's store, file or batch, like a missing one, is 404
on every route (an admin key reaches every tenant's). genspool adds ``model`` to a store's
create (the served embedding model its vectors are made by; default: the bundled MiniLM); an
update naming another model is refused with both models' dimensions (a store is one model's).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.api.auth import Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.routes_jobs import read_body
from genspool.api.schemas import request_body
from genspool.core.keys import Scope
from genspool.core.vectors import VectorStore, VectorStoreFile
from genspool.exceptions import ConfigError, InvalidRequest, NotFound
from genspool.rag.service import VectorStores, new_batch_id

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["vector stores"])

#: How often the SDK's ``*_and_poll`` helpers ask again.
POLL_AFTER_MS = "250"


class VectorStoresUnavailable(ConfigError):
    status_code = 501
    code = "vector_stores_unavailable"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreCreate(_Strict):
    name: str | None = Field(None, max_length=256)
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    expires_after: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    description: str | None = Field(None, max_length=512)
    model: str | None = Field(None, description="genspool: the embedding model of the store.")


class StoreUpdate(_Strict):
    name: str | None = Field(None, max_length=256)
    expires_after: dict[str, Any] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    model: str | None = Field(
        None,
        description="genspool: the store's own embedding model (a no-op); another is refused,"
        " naming both models' dimensions: make a new store for it.",
    )


class FileCreate(_Strict):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class FileUpdate(_Strict):
    attributes: dict[str, Any] | None


class BatchFile(_Strict):
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class BatchCreate(_Strict):
    file_ids: list[str] | None = Field(None, max_length=500)
    files: list[BatchFile] | None = Field(None, max_length=500)
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class SourceIngest(_Strict):
    source: str = Field(min_length=1, max_length=2048, description="A path or URL: its name.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Of its bytes.")
    file_id: str | None = Field(None, description="The new bytes, uploaded (purpose any).")
    attributes: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None


class Cleanup(_Strict):
    keep: list[str] = Field(description="The sources of this ingest; every other goes.")


class SearchRanking(_Strict):
    ranker: str | None = None
    score_threshold: float | None = Field(None, ge=0, le=1)


class Search(_Strict):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int = Field(10, ge=1, le=10_000)
    ranking_options: SearchRanking | None = None
    rewrite_query: bool = False


def _stores(svc: Services) -> VectorStores:
    if svc.vector_stores is None:
        raise VectorStoresUnavailable(
            "this deployment keeps no vector stores: its store is a Redis or NATS server alone;"
            " run with GENSPOOL_DATABASE_URL=postgresql://... (the store) and GENSPOOL_QUEUE_URL"
            " set to the Redis or NATS server (the queue)"
        )
    return svc.vector_stores


def _parse(kind: type[_Strict], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise InvalidRequest("body: must be a JSON object")
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


async def _body(request: Request, svc: Services, kind: type[_Strict]) -> Any:
    return _parse(kind, await read_body(request, svc) if await request.body() else {})


def _list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None, "has_more": has_more,
    }  # fmt: skip


async def store_json(stores: VectorStores, s: VectorStore) -> dict[str, Any]:
    counts = await stores.counts(s)
    status = (
        "expired"
        if s.status == "expired"
        else ("in_progress" if counts["in_progress"] else "completed")
    )
    return {
        "id": s.id, "object": "vector_store", "created_at": int(s.created_at), "name": s.name,
        "usage_bytes": counts.pop("usage_bytes"), "file_counts": counts, "status": status,
        "expires_after": s.expires_after,
        "expires_at": None if s.expires_at is None else int(s.expires_at),
        "last_active_at": None if s.last_active_at is None else int(s.last_active_at),
        "metadata": s.metadata or {}, "model": s.model, "dimensions": s.dimensions,
    }  # fmt: skip


def file_json(vf: VectorStoreFile) -> dict[str, Any]:
    return {
        "id": vf.id, "object": "vector_store.file", "usage_bytes": vf.usage_bytes,
        "created_at": int(vf.created_at), "vector_store_id": vf.store_id, "status": vf.status,
        "last_error": vf.last_error, "chunking_strategy": vf.chunking,
        "attributes": vf.attributes,
    }  # fmt: skip


def _polled(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"openai-poll-after-ms": POLL_AFTER_MS})


# -- stores ------------------------------------------------------------------------------------


@router.post(
    "/vector_stores", summary="Create a vector store", openapi_extra=request_body(StoreCreate)
)
@requires(Scope.SUBMIT, submits=True)
async def create_store(request: Request, svc: Svc, caller: Principal) -> dict[str, Any]:
    spec: StoreCreate = await _body(request, svc, StoreCreate)
    stores = _stores(svc)
    made = await stores.create(
        tenant=caller.tenant, name=spec.name, metadata=spec.metadata,
        expires_after=spec.expires_after, model=spec.model, file_ids=spec.file_ids,
        chunking_strategy=spec.chunking_strategy,
    )  # fmt: skip
    return await store_json(stores, made)


@router.get("/vector_stores", summary="Vector stores, newest first")
@requires(Scope.READ)
async def list_stores(
    svc: Svc,
    caller: Principal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    stores = _stores(svc)
    page = await stores.page(caller.sees, after=after, limit=limit, order=order)
    return _list([await store_json(stores, s) for s in page.data], page.has_more)


@router.get("/vector_stores/{store_id}", summary="A vector store and its file counts")
@requires(Scope.READ)
async def get_store(svc: Svc, caller: Principal, store_id: str) -> dict[str, Any]:
    stores = _stores(svc)
    return await store_json(stores, await stores.get(store_id, caller.sees))


@router.post(
    "/vector_stores/{store_id}",
    summary="Rename a vector store, or change its expiry or metadata",
    openapi_extra=request_body(StoreUpdate),
)
@requires(Scope.SUBMIT)
async def update_store(
    request: Request, svc: Svc, caller: Principal, store_id: str
) -> dict[str, Any]:
    spec: StoreUpdate = await _body(request, svc, StoreUpdate)
    stores = _stores(svc)
    made = await stores.update(store_id, caller.sees, name=spec.name, metadata=spec.metadata,
                               expires_after=spec.expires_after, model=spec.model)  # fmt: skip
    return await store_json(stores, made)


@router.delete("/vector_stores/{store_id}", summary="Delete a vector store and its chunks")
@requires(Scope.SUBMIT)
async def delete_store(svc: Svc, caller: Principal, store_id: str) -> dict[str, Any]:
    deleted = await _stores(svc).delete(store_id, caller.sees)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": deleted}


# -- files -------------------------------------------------------------------------------------


@router.post(
    "/vector_stores/{store_id}/files",
    summary="Add a file: it is chunked and embedded",
    openapi_extra=request_body(FileCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def add_file(request: Request, svc: Svc, caller: Principal, store_id: str) -> JSONResponse:
    spec: FileCreate = await _body(request, svc, FileCreate)
    vf = await _stores(svc).add_file(
        store_id, spec.file_id, tenant=caller.sees, attributes=spec.attributes,
        chunking_strategy=spec.chunking_strategy,
    )  # fmt: skip
    return _polled(file_json(vf))


@router.get("/vector_stores/{store_id}/files", summary="A vector store's files")
@requires(Scope.READ)
async def list_files(
    svc: Svc,
    caller: Principal,
    store_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    page = await _stores(svc).file_page(
        store_id, caller.sees, status=filter, after=after, limit=limit, order=order
    )
    return _list([file_json(f) for f in page.data], page.has_more)


@router.get("/vector_stores/{store_id}/files/{file_id}", summary="A vector store file: its status")
@requires(Scope.READ)
async def get_file(svc: Svc, caller: Principal, store_id: str, file_id: str) -> JSONResponse:
    return _polled(file_json(await _stores(svc).file(store_id, file_id, caller.sees)))


@router.post(
    "/vector_stores/{store_id}/files/{file_id}",
    summary="Change a file's attributes",
    openapi_extra=request_body(FileUpdate),
)
@requires(Scope.SUBMIT)
async def update_file(
    request: Request, svc: Svc, caller: Principal, store_id: str, file_id: str
) -> dict[str, Any]:
    spec: FileUpdate = await _body(request, svc, FileUpdate)
    vf = await _stores(svc).update_file(store_id, file_id, caller.sees, spec.attributes or {})
    return file_json(vf)


@router.delete(
    "/vector_stores/{store_id}/files/{file_id}",
    summary="Remove a file and its chunks from a store (the file itself stays)",
)
@requires(Scope.SUBMIT)
async def remove_file(svc: Svc, caller: Principal, store_id: str, file_id: str) -> dict[str, Any]:
    deleted = await _stores(svc).remove_file(store_id, file_id, caller.sees)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": deleted}


@router.get(
    "/vector_stores/{store_id}/files/{file_id}/content", summary="A file's chunks' text, in order"
)
@requires(Scope.READ)
async def file_content(svc: Svc, caller: Principal, store_id: str, file_id: str) -> dict[str, Any]:
    stores = _stores(svc)
    vf = await stores.file(store_id, file_id, caller.sees)
    chunks = await stores.chunks.chunks_get(store_id, [(vf.id, n) for n in range(vf.chunks)])
    data = [{"type": "text", "text": c.text} for c in chunks]
    return {"object": "vector_store.file_content.page", "data": data, "has_more": False,
            "next_page": None}  # fmt: skip


# -- file batches ------------------------------------------------------------------------------


async def _batch_json(
    stores: VectorStores, store_id: str, batch_id: str, tenant: str | None
) -> dict[str, Any]:
    page = await stores.file_page(store_id, tenant, status=None, after=None, limit=100,
                                  order="asc", batch_id=batch_id)  # fmt: skip
    files = list(page.data)
    after = files[-1].id if files else None
    while page.has_more and after is not None:
        page = await stores.file_page(store_id, tenant, status=None, after=after, limit=100,
                                      order="asc", batch_id=batch_id)  # fmt: skip
        files += page.data
        after = files[-1].id if page.data else None
    if not files:
        raise NotFound(f"no file batch {batch_id!r} in vector store {store_id}", param="batch_id")
    counts = {s: sum(1 for f in files if f.status == s)
              for s in ("in_progress", "completed", "failed", "cancelled")}  # fmt: skip
    counts["total"] = len(files)
    status = (
        "in_progress" if counts["in_progress"] else "cancelled" if counts["cancelled"]
        else "failed" if counts["failed"] == len(files) else "completed"
    )  # fmt: skip
    created = int(batch_id.removeprefix("vsfb_")[:-10], 16) / 1e9
    return {"id": batch_id, "object": "vector_store.files_batch", "created_at": int(created),
            "vector_store_id": store_id, "status": status, "file_counts": counts}  # fmt: skip


@router.post(
    "/vector_stores/{store_id}/file_batches",
    summary="Add several files at once",
    openapi_extra=request_body(BatchCreate),
)
@requires(Scope.SUBMIT, submits=True)
async def create_batch(
    request: Request, svc: Svc, caller: Principal, store_id: str
) -> JSONResponse:
    spec: BatchCreate = await _body(request, svc, BatchCreate)
    if (spec.file_ids is None) == (spec.files is None):
        raise InvalidRequest("give file_ids or files (not both)", param="file_ids")
    entries = spec.files or [BatchFile(file_id=f, attributes=spec.attributes,
                                       chunking_strategy=spec.chunking_strategy)
                             for f in spec.file_ids or ()]  # fmt: skip
    if not entries:
        raise InvalidRequest("file_ids: give at least one", param="file_ids")
    stores, batch_id = _stores(svc), new_batch_id()
    for entry in entries:
        await stores.add_file(
            store_id, entry.file_id, tenant=caller.sees, attributes=entry.attributes,
            chunking_strategy=entry.chunking_strategy, batch_id=batch_id,
        )  # fmt: skip
    return _polled(await _batch_json(stores, store_id, batch_id, caller.sees))


@router.get(
    "/vector_stores/{store_id}/file_batches/{batch_id}",
    summary="A file batch: its status and counts",
)
@requires(Scope.READ)
async def get_batch(svc: Svc, caller: Principal, store_id: str, batch_id: str) -> JSONResponse:
    return _polled(await _batch_json(_stores(svc), store_id, batch_id, caller.sees))


@router.post(
    "/vector_stores/{store_id}/file_batches/{batch_id}/cancel",
    summary="Cancel the files of a batch not yet ingested",
)
@requires(Scope.SUBMIT)
async def cancel_batch(svc: Svc, caller: Principal, store_id: str, batch_id: str) -> dict[str, Any]:
    stores = _stores(svc)
    await _batch_json(stores, store_id, batch_id, caller.sees)  # 404 first
    await stores.cancel_batch(store_id, batch_id, caller.sees)
    return await _batch_json(stores, store_id, batch_id, caller.sees)


@router.get(
    "/vector_stores/{store_id}/file_batches/{batch_id}/files", summary="A file batch's files"
)
@requires(Scope.READ)
async def batch_files(
    svc: Svc,
    caller: Principal,
    store_id: str,
    batch_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    filter: Literal["in_progress", "completed", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    page = await _stores(svc).file_page(store_id, caller.sees, status=filter, after=after,
                                        limit=limit, order=order, batch_id=batch_id)  # fmt: skip
    return _list([file_json(f) for f in page.data], page.has_more)


# -- sources (genspool's): directories and sites ingested again -------------------------------


@router.post(
    "/vector_stores/{store_id}/sources",
    summary="Ingest a document by its name: skipped when unchanged, added or updated",
    openapi_extra=request_body(SourceIngest),
)
@requires(Scope.SUBMIT, submits=True)
async def ingest_source(
    request: Request, svc: Svc, caller: Principal, store_id: str
) -> dict[str, Any]:
    spec: SourceIngest = await _body(request, svc, SourceIngest)
    outcome, vf = await _stores(svc).source(
        store_id, caller.sees, spec.source, sha256=spec.sha256, file_id=spec.file_id,
        attributes=spec.attributes, chunking_strategy=spec.chunking_strategy,
    )  # fmt: skip
    return {"object": "vector_store.source", "source": spec.source, "outcome": outcome,
            "file": None if vf is None else file_json(vf)}  # fmt: skip


@router.post(
    "/vector_stores/{store_id}/sources/cleanup",
    summary="Remove the files of every source not kept (cleanup: full)",
    openapi_extra=request_body(Cleanup),
)
@requires(Scope.SUBMIT)
async def cleanup_sources(
    request: Request, svc: Svc, caller: Principal, store_id: str
) -> dict[str, Any]:
    spec: Cleanup = await _body(request, svc, Cleanup)
    deleted = await _stores(svc).cleanup(store_id, caller.sees, set(spec.keep))
    return {"object": "vector_store.cleanup", "num_deleted": deleted}


# -- search ------------------------------------------------------------------------------------


@router.post(
    "/vector_stores/{store_id}/search",
    summary="Search a store's chunks, filters applied before ranking",
    openapi_extra=request_body(Search),
)
@requires(Scope.READ)
async def search(request: Request, svc: Svc, caller: Principal, store_id: str) -> dict[str, Any]:
    spec: Search = await _body(request, svc, Search)
    threshold = spec.ranking_options.score_threshold if spec.ranking_options else None
    hits = await _stores(svc).search(
        store_id, caller.sees, spec.query, k=spec.max_num_results, filters=spec.filters,
        score_threshold=threshold,
    )  # fmt: skip
    data = [
        {
            "file_id": h.chunk.file_id,
            "filename": h.filename,
            "score": round(h.score, 6),
            "attributes": h.chunk.attributes,
            "content": [{"type": "text", "text": h.chunk.text}],
            "chunk": {
                "seq": h.chunk.seq,
                "start": h.chunk.start,
                "end": h.chunk.end,
                "page": h.chunk.page,
                "headings": list(h.chunk.headings),
            },
        }
        for h in hits
    ]
    query = spec.query if isinstance(spec.query, str) else " ".join(spec.query)
    return {"object": "vector_store.search_results.page", "search_query": query, "data": data,
            "has_more": False, "next_page": None}  # fmt: skip
