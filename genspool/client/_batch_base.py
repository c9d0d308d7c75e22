"""Files and batches as the clients see them, without doing any I/O.

The typed views (:class:`FileObject`, :class:`Batch`, :class:`Page`), the :class:`Call` of each
operation of ``/v1/files`` and ``/v1/batches``, and :class:`ListPager`, the cursor of their
OpenAI-style listings (``after`` the last id seen, until ``has_more`` is false). Like
``_base``, it lets the sync and the async namespaces differ only in ``await``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, TypeVar

from genspool.client._base import Call, _segment

__all__ = [
    "TERMINAL_BATCH",
    "Batch",
    "BatchCounts",
    "FileObject",
    "ListPager",
    "Page",
    "batch_call",
    "create_batch",
    "file_call",
    "upload",
]

T = TypeVar("T")
Json = Mapping[str, Any]

#: A batch in one of these states changes no more.
TERMINAL_BATCH = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class FileObject:
    """A stored file: an upload (``batch``, ``user_data``…) or a batch's ``batch_output``."""

    id: str
    bytes: int
    filename: str
    purpose: str
    created_at: int
    expires_at: int | None = None
    sha256: str | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> FileObject:
        return cls(
            id=str(data["id"]),
            bytes=int(data.get("bytes") or 0),
            filename=str(data.get("filename") or ""),
            purpose=str(data.get("purpose") or ""),
            created_at=int(data.get("created_at") or 0),
            expires_at=data.get("expires_at"),
            sha256=data.get("sha256"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """``request_counts``: ``completed`` and ``failed`` grow as lines are written."""

    total: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch: its status, counts, files and the errors of a malformed input."""

    id: str
    status: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    request_counts: BatchCounts
    output_file_id: str | None = None
    error_file_id: str | None = None
    #: Malformed input lines: ``{"code", "message", "param", "line"}``, ``line`` 1-based.
    errors: tuple[Json, ...] = ()
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_BATCH

    @classmethod
    def from_wire(cls, data: Json) -> Batch:
        counts = data.get("request_counts") or {}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            endpoint=str(data.get("endpoint") or ""),
            input_file_id=str(data.get("input_file_id") or ""),
            completion_window=str(data.get("completion_window") or ""),
            created_at=int(data.get("created_at") or 0),
            request_counts=BatchCounts(**{k: int(counts.get(k) or 0) for k in _COUNTS}),
            output_file_id=data.get("output_file_id"),
            error_file_id=data.get("error_file_id"),
            errors=tuple((data.get("errors") or {}).get("data") or ()),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


_COUNTS = ("total", "completed", "failed")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; the next one starts ``after`` its ``last_id``."""

    data: list[T]
    has_more: bool
    last_id: str | None


@dataclass(slots=True)
class ListPager(Generic[T]):
    """The cursor of an OpenAI-style listing: each page asks for the items after the last id
    seen, until the server says there are no more."""

    path: str
    parse: Callable[[Json], T]
    query: dict[str, Any]
    after: str | None = None
    done: bool = False

    def call(self) -> Call[Page[T]]:
        return Call("GET", self.path, self._page, params={**self.query, "after": self.after})

    def advance(self, page: Page[T]) -> list[T]:
        """The page's items; moves the cursor past them, or ends the listing."""
        self.done = not page.has_more or page.last_id is None or page.last_id == self.after
        self.after = page.last_id
        return page.data

    def _page(self, body: Json) -> Page[T]:
        data = [self.parse(item) for item in body.get("data") or ()]
        last = body.get("last_id") or (self._id(data[-1]) if data else None)
        return Page(data, bool(body.get("has_more")), last)

    @staticmethod
    def _id(item: Any) -> str | None:
        return getattr(item, "id", None)


# -- operations --------------------------------------------------------------------------------


def upload(
    filename: str, stream: BinaryIO, purpose: str, expires_after_s: int | None
) -> Call[FileObject]:
    """``POST /v1/files``: ``stream`` is read in chunks as the form is sent."""
    data = {"purpose": purpose}
    if expires_after_s is not None:
        data |= {
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": str(expires_after_s),
        }
    files = {"file": (filename, stream, "application/octet-stream")}
    return Call("POST", "/v1/files", FileObject.from_wire, files=files, data=data)


def file_call(method: str, file_id: str, tail: str = "") -> Call[FileObject]:
    return Call(method, f"/v1/files/{_segment(file_id)}{tail}", FileObject.from_wire)


def file_content(file_id: str) -> Call[None]:
    return Call("GET", f"/v1/files/{_segment(file_id)}/content", lambda _: None)


def delete_file(file_id: str) -> Call[bool]:
    return Call("DELETE", f"/v1/files/{_segment(file_id)}", lambda r: bool(r.get("deleted")))


def create_batch(
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: Mapping[str, str] | None,
    output_expires_after_s: int | None,
) -> Call[Batch]:
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if output_expires_after_s is not None:
        body["output_expires_after"] = {"anchor": "created_at", "seconds": output_expires_after_s}
    return Call("POST", "/v1/batches", Batch.from_wire, body=body)


def batch_call(method: str, batch_id: str, tail: str = "") -> Call[Batch]:
    return Call(method, f"/v1/batches/{_segment(batch_id)}{tail}", Batch.from_wire)


def file_pager(
    purpose: str | None, limit: int, order: str, after: str | None
) -> ListPager[FileObject]:
    # The server checks the values (``limit`` up to its maximum, a known purpose).
    query = {"purpose": purpose, "limit": limit, "order": order}
    return ListPager("/v1/files", FileObject.from_wire, query, after)


def batch_pager(limit: int, after: str | None) -> ListPager[Batch]:
    return ListPager("/v1/batches", Batch.from_wire, {"limit": limit}, after)
