"""The batch: one run of the OpenAI Batch API over an input file, as its record is stored.

A batch's lines are ordinary jobs (one per input line, at a bulk priority); the record keeps
what the API shows (status, timestamps, counts, usage, the ids of its files) and the cursors that
let any process resume it after a crash: how many lines are enqueued (``enqueued``) and how many
are written to the output in line order (``written``, in ``segments`` committed pieces). Its
transitions are decided in :mod:`genspool.batches.machine`; states::

    validating ──▶ in_progress ──▶ finalizing ──▶ completed
        │              │
        ▼              ├──▶ cancelling ──▶ cancelled     (cancel: finished lines kept)
      failed           └──▶ expired                      (past its completion window)

Every write of a record is fenced by ``version`` (compare-and-set), so an API process that
cancels and the process that runs the batch never overwrite each other's change.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from genspool._ids import random_hex

__all__ = [
    "TERMINAL_BATCH",
    "Batch",
    "BatchStatus",
    "batch_from_doc",
    "batch_to_doc",
    "new_batch_id",
]


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_BATCH = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


def new_batch_id() -> str:
    """``batch_`` and a hex that grows with time (lists page by id), then randomness."""
    return f"batch_{time.time_ns():x}{random_hex(5)}"


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: float
    expires_at: float
    status: BatchStatus = BatchStatus.VALIDATING
    metadata: dict[str, str] | None = None
    #: Seconds the output and error files live after they are made (None: kept).
    output_expires_after: float | None = None
    #: The creator's scopes, kept on every line job (the agents' tool calls check them).
    scopes: tuple[str, ...] | None = None
    #: Malformed input: ``{"code", "message", "param", "line"}``, ``line`` 1-based.
    errors: tuple[dict[str, Any], ...] = ()
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    total: int = 0
    completed: int = 0  # written lines that succeeded
    failed: int = 0  # written lines that did not (failed, cancelled, expired)
    usage: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    # -- how far it got (not shown) ----------------------------------------------------------
    version: int = 0
    owner: str | None = None  # the runner driving it, until ``lease_until``
    lease_until: float = 0.0
    #: Why the remaining lines stop: None, ``"cancel"`` or ``"expire"``.
    stop: str | None = None
    enqueued: int = 0  # lines 1..enqueued are jobs
    written: int = 0  # lines 1..written are in the committed segments
    segments: int = 0  # committed pieces of the output (and of the error output)
    out_lines: int = 0
    err_lines: int = 0
    #: Ids of the output and error files being made, so a resumed finalizing reuses them.
    pending_files: tuple[str | None, str | None] = (None, None)
    #: The stored prompts its lines name by a label, each pinned to the version the label
    #: pointed at when the lines were checked (``"greet@production"``: 3), so every line uses
    #: that version whatever the label does while the batch runs (:mod:`genspool.batches.prompts`).
    prompts: dict[str, int] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_BATCH


def batch_to_doc(batch: Batch) -> bytes:
    """The record as JSON (the SQL backends keep it whole beside a few indexed columns)."""
    return orjson.dumps(dataclasses.asdict(batch))


def batch_from_doc(doc: bytes | str) -> Batch:
    raw = orjson.loads(doc)
    raw["status"] = BatchStatus(raw["status"])
    raw["errors"] = tuple(raw["errors"])
    raw["pending_files"] = tuple(raw["pending_files"])
    if raw["scopes"] is not None:
        raw["scopes"] = tuple(raw["scopes"])
    return Batch(**raw)
