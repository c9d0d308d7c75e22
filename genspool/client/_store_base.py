"""Vector stores as the clients see them, without doing any I/O.

The typed views (:class:`VectorStore`, :class:`StoreFile`, :class:`SearchHit`,
:class:`IngestOutcome`) and the :class:`Call` of each operation of ``/v1/vector_stores``, the
OpenAI-compatible routes and genspool's ingest *by source name* (a path or a URL, so a directory
or a site ingested again sends only what changed). Like ``_base``, it lets the sync and the
async clients differ only in ``await``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genspool.client._base import Call, _segment
from genspool.client._batch_base import FileObject, ListPager, upload

__all__ = [
    "IngestOutcome",
    "OnFile",
    "SearchHit",
    "StoreFile",
    "VectorStore",
    "chunking_strategy",
]

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class VectorStore:
    """A vector store: its name, embedding model and file counts."""

    id: str
    name: str | None
    status: str
    created_at: int
    #: ``in_progress``, ``completed``, ``failed``, ``cancelled`` and ``total``.
    file_counts: Json = field(default_factory=dict)
    usage_bytes: int = 0
    model: str | None = None
    dimensions: int | None = None
    metadata: Json = field(default_factory=dict)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> VectorStore:
        return cls(
            id=str(data["id"]),
            name=data.get("name"),
            status=str(data.get("status") or ""),
            created_at=int(data.get("created_at") or 0),
            file_counts=data.get("file_counts") or {},
            usage_bytes=int(data.get("usage_bytes") or 0),
            model=data.get("model"),
            dimensions=data.get("dimensions"),
            metadata=data.get("metadata") or {},
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class StoreFile:
    """A file of a vector store: ``in_progress`` while it is chunked and embedded, then
    ``completed``, or ``failed`` with ``last_error`` (``{"code", "message"}``)."""

    id: str
    store_id: str
    status: str
    last_error: Json | None = None
    attributes: Json | None = None
    usage_bytes: int = 0
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status != "in_progress"

    @classmethod
    def from_wire(cls, data: Json) -> StoreFile:
        return cls(
            id=str(data["id"]),
            store_id=str(data.get("vector_store_id") or ""),
            status=str(data["status"]),
            last_error=data.get("last_error"),
            attributes=data.get("attributes"),
            usage_bytes=int(data.get("usage_bytes") or 0),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk found: its score, file, text, and where it stands in the source."""

    file_id: str
    filename: str
    score: float
    text: str
    attributes: Json | None = None
    page: int | None = None
    headings: tuple[str, ...] = ()
    #: Character offsets of the chunk in the document's extracted text.
    start: int | None = None
    end: int | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> SearchHit:
        chunk = data.get("chunk") or {}
        content = data.get("content") or ()
        return cls(
            file_id=str(data["file_id"]),
            filename=str(data.get("filename") or ""),
            score=float(data.get("score") or 0.0),
            text="".join(str(c.get("text") or "") for c in content),
            attributes=data.get("attributes"),
            page=chunk.get("page"),
            headings=tuple(chunk.get("headings") or ()),
            start=chunk.get("start"),
            end=chunk.get("end"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What :meth:`~genspool.Client.ingest_source` did with one source: ``skipped`` (the store
    holds these bytes for it), ``added`` or ``updated`` (then ``file`` is ``in_progress``
    until :meth:`~genspool.Client.wait_files` sees it end)."""

    source: str
    outcome: str
    file: StoreFile | None

    @classmethod
    def from_wire(cls, data: Json) -> IngestOutcome:
        vf = data.get("file")
        return cls(str(data["source"]), str(data["outcome"]), vf and StoreFile.from_wire(vf))


#: What ``wait_files`` calls with each file as it ends.
OnFile = Callable[[StoreFile], None]


def chunking_strategy(size: int | None, overlap: int | None) -> dict[str, Any] | None:
    """OpenAI's ``static`` strategy from a chunk size and overlap in tokens (None: ``auto``);
    the overlap defaults to a quarter of the size, as the server's auto does."""
    if size is None and overlap is None:
        return None
    if size is None:
        raise ValueError("a chunk overlap needs a chunk size")
    static = {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap or size // 4}
    return {"type": "static", "static": static}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- operations --------------------------------------------------------------------------------


def _path(store_id: str, tail: str = "") -> str:
    return f"/v1/vector_stores/{_segment(store_id)}{tail}"


def store_pager(limit: int) -> ListPager[VectorStore]:
    return ListPager("/v1/vector_stores", VectorStore.from_wire, {"limit": limit}, None)


def create_store(
    name: str | None, model: str | None, metadata: Mapping[str, str] | None
) -> Call[VectorStore]:
    body: dict[str, Any] = {"name": name}
    if model is not None:
        body["model"] = model
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return Call("POST", "/v1/vector_stores", VectorStore.from_wire, body=body)


def store(store_id: str) -> Call[VectorStore]:
    return Call("GET", _path(store_id), VectorStore.from_wire)


def delete_store(store_id: str) -> Call[bool]:
    return Call("DELETE", _path(store_id), lambda r: bool(r.get("deleted")))


def search(
    store_id: str,
    query: str,
    k: int,
    filters: Mapping[str, Any] | None,
    score_threshold: float | None,
) -> Call[list[SearchHit]]:
    body: dict[str, Any] = {"query": query, "max_num_results": k}
    if filters is not None:
        body["filters"] = dict(filters)
    if score_threshold is not None:
        body["ranking_options"] = {"score_threshold": score_threshold}
    return Call("POST", _path(store_id, "/search"), _hits, body=body)


def _hits(body: Json) -> list[SearchHit]:
    return [SearchHit.from_wire(h) for h in body.get("data") or ()]


def compare_source(store_id: str, source: str, data: bytes) -> Call[IngestOutcome]:
    """Whether the store holds these bytes for ``source`` already (nothing is uploaded)."""
    body = {"source": source, "sha256": sha256(data)}
    return Call("POST", _path(store_id, "/sources"), IngestOutcome.from_wire, body=body)


def upload_source(filename: str, data: bytes) -> Call[FileObject]:
    return upload(filename, io.BytesIO(data), "assistants", None)


def register_source(
    store_id: str,
    source: str,
    file_id: str,
    attributes: Mapping[str, Any] | None,
    chunking: Mapping[str, Any] | None,
) -> Call[IngestOutcome]:
    body: dict[str, Any] = {"source": source, "file_id": file_id}
    if attributes is not None:
        body["attributes"] = dict(attributes)
    if chunking is not None:
        body["chunking_strategy"] = dict(chunking)
    return Call("POST", _path(store_id, "/sources"), IngestOutcome.from_wire, body=body)


def cleanup_sources(store_id: str, keep: list[str]) -> Call[int]:
    body = {"keep": keep}
    return Call("POST", _path(store_id, "/sources/cleanup"), _deleted, body=body)


def _deleted(body: Json) -> int:
    return int(body.get("num_deleted") or 0)


def store_file(store_id: str, file_id: str) -> Call[StoreFile]:
    return Call("GET", _path(store_id, f"/files/{_segment(file_id)}"), StoreFile.from_wire)


def in_progress_pager(store_id: str) -> ListPager[StoreFile]:
    query = {"limit": 100, "filter": "in_progress"}
    return ListPager(_path(store_id, "/files"), StoreFile.from_wire, query, None)


@dataclass(slots=True)
class FileWaiter:
    """The files a wait still expects: each round lists the store's files ``in_progress``, and
    only those that left that list are fetched (one request per file that ended, not per
    file per poll)."""

    store_id: str
    pending: set[str]
    on_update: OnFile | None
    ended: dict[str, StoreFile] = field(default_factory=dict)

    def gone(self, in_progress: set[str]) -> list[str]:
        """The files waited for that are no longer in progress: fetch each once."""
        return sorted(self.pending - in_progress)

    def end(self, vf: StoreFile) -> None:
        if not vf.ended:
            return  # listed between pages; the next round sees it again
        self.pending.discard(vf.id)
        self.ended[vf.id] = vf
        if self.on_update is not None:
            self.on_update(vf)
