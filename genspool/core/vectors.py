"""Vector stores, their files and their chunks, as they are stored.

A *vector store* (OpenAI's object, ``vs_…``) is a tenant's collection: it records the
embedding model and dimensions its vectors were made with. A *vector store file* is one
document in it (an uploaded file, a page of a crawl, a file of a directory), with its status,
``attributes`` (what search filters match) and how it is chunked. Its *chunks* carry the text,
where it is in the document (character offsets, page, headings) and the vector.

Never lose the old version: a document's chunks are written under a new ``generation``,
invisible, and embedded; one transaction of the chunk store (:meth:`ChunkStore.chunks_flip`)
makes that generation current and deletes the ones before it. Until then every search answers
from the old generation; a failure, a crash or a cancel leaves it current.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from genspool._ids import random_hex

__all__ = [
    "TERMINAL_FILE",
    "Chunk",
    "VectorStore",
    "VectorStoreFile",
    "new_store_id",
    "store_from_doc",
    "store_to_doc",
    "vfile_from_doc",
    "vfile_to_doc",
]

#: A vector store file's statuses that end its processing.
TERMINAL_FILE = frozenset({"completed", "failed", "cancelled"})


def new_store_id() -> str:
    """``vs_`` and a hex that grows with time (lists page by id), then randomness."""
    return f"vs_{time.time_ns():x}{random_hex(5)}"


@dataclass(frozen=True, slots=True)
class VectorStore:
    id: str
    tenant: str
    created_at: float
    #: The embedding model (a served model's name) and the dimensions of its vectors (None
    #: until the first document is embedded: a store is made without calling the model).
    model: str
    dimensions: int | None
    name: str | None = None
    metadata: dict[str, str] | None = None
    #: OpenAI's ``{"anchor": "last_active_at", "days": n}``.
    expires_after: dict[str, Any] | None = None
    expires_at: float | None = None
    last_active_at: float | None = None
    #: ``expired`` once past ``expires_at``; else ``in_progress`` while a file is, or
    #: ``completed`` (decided from the files when shown).
    status: str = "completed"
    version: int = 0


@dataclass(frozen=True, slots=True)
class VectorStoreFile:
    #: The Files API id of the document (``file-…``).
    id: str
    store_id: str
    tenant: str
    created_at: float
    status: str = "in_progress"  # in_progress | completed | failed | cancelled
    attributes: dict[str, str | float | bool] = field(default_factory=dict)
    #: OpenAI's ``{"type": "static", "static": {"max_chunk_size_tokens", "chunk_overlap_tokens"}}``.
    chunking: dict[str, Any] = field(default_factory=dict)
    usage_bytes: int = 0
    #: ``{"code", "message"}`` of a failed file.
    last_error: dict[str, str] | None = None
    #: The file batch that added it, if any.
    batch_id: str | None = None
    #: Where the document came from when it is not an upload (a URL, a path): ingesting the
    #: same source again updates this file.
    source: str | None = None
    #: The Files API file holding the document's latest bytes, when they are not the file
    #: ``id`` names (a source ingested again with new content).
    content_file_id: str | None = None
    #: The sha256 of the extracted text of the current generation (what re-ingest compares).
    content_sha256: str | None = None
    #: The generation its chunks are current at (0: none yet), and the one being made.
    generation: int = 0
    pending_generation: int | None = None
    chunks: int = 0
    # -- the ingesting process's lease (not shown) ---------------------------------------------
    owner: str | None = None
    lease_until: float = 0.0
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_FILE


@dataclass(frozen=True, slots=True)
class Chunk:
    store_id: str
    file_id: str
    generation: int
    seq: int  # 0-based position in the document
    text: str
    #: Character offsets of ``text`` in the document's extracted text.
    start: int
    end: int
    tokens: int
    #: The vector, float32, little-endian (``numpy.frombuffer(vector, "<f4")``).
    vector: bytes
    page: int | None = None
    headings: tuple[str, ...] = ()
    #: The file's attributes when the chunk was written (what search filters match).
    attributes: dict[str, str | float | bool] = field(default_factory=dict)


def store_to_doc(store: VectorStore) -> bytes:
    return orjson.dumps(dataclasses.asdict(store))


def store_from_doc(doc: bytes | str) -> VectorStore:
    return VectorStore(**orjson.loads(doc))


def vfile_to_doc(vfile: VectorStoreFile) -> bytes:
    return orjson.dumps(dataclasses.asdict(vfile))


def vfile_from_doc(doc: bytes | str) -> VectorStoreFile:
    return VectorStoreFile(**orjson.loads(doc))
