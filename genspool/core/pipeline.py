"""A pipeline run and its items, as they are stored.

A pipeline (:mod:`genspool.pipelines.spec`) reads items from a source, takes each item through
its steps (model calls are ordinary jobs) and writes the results to its sinks. One *run* is one
pass, started by HTTP, a schedule tick, a settled file or an event; its record keeps what the
API shows (status, counts, files) and the cursors that let any API process resume it after a
crash. Its items are stored one row each, keyed by the item's key within the run, in source
order (``seq``), with the outputs of the steps that finished, so a resumed run never does an
item's step twice. Transitions are decided in :mod:`genspool.pipelines.machine`; states::

    queued ──▶ running ──▶ finalizing ──▶ completed
                  │  ╲
                  │   ▶ failed            (the source could not be read, or a sink failed)
                  ▼
              cancelling ──▶ cancelled    (items finished so far kept in the sinks)

Every write of a record is fenced by ``version`` (compare-and-set), as a batch's is.
A *tick* is one instant of a schedule, recorded once per pipeline as ``fired`` (with the run it
started), ``skipped`` (a misfire policy passed it over) or ``missed``, so a dropped tick shows.
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
    "TERMINAL_ITEM",
    "TERMINAL_RUN",
    "ItemStatus",
    "PipelineRun",
    "RunItem",
    "RunStatus",
    "Tick",
    "item_from_doc",
    "item_to_doc",
    "new_run_id",
    "run_from_doc",
    "run_to_doc",
]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_RUN = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class ItemStatus(StrEnum):
    PENDING = "pending"  # read from the source, some step still to run
    DONE = "done"  # every step ran
    FAILED = "failed"  # a step failed: the item is in the run's error file
    SKIPPED = "skipped"  # a filter step let it go, or an earlier run finished it


TERMINAL_ITEM = frozenset({ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.SKIPPED})


def new_run_id() -> str:
    """``run_`` and a hex that grows with time (lists page by id), then randomness."""
    return f"run_{time.time_ns():x}{random_hex(5)}"


@dataclass(frozen=True, slots=True)
class PipelineRun:
    id: str
    tenant: str
    pipeline: str
    created_at: float
    #: What started it: ``http``, ``schedule``, ``files``, ``events``.
    trigger: str = "http"
    #: Unique per (tenant, pipeline) when set: ``cron:{pipeline}:{tick}``, a settled file's
    #: identity, a caller's Idempotency-Key. A second run under the same key is the first one.
    key: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.QUEUED
    metadata: dict[str, str] | None = None
    #: The creator's scopes, kept on every job of the run.
    scopes: tuple[str, ...] | None = None
    #: Run every item, even those an earlier run of the pipeline finished.
    force: bool = False
    started_at: float | None = None
    finalizing_at: float | None = None
    ended_at: float | None = None
    cancelling_at: float | None = None
    #: Items read from the source so far; ``total`` is set once the source is read whole.
    read: int = 0
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    #: The sinks' files (Files API ids, purpose ``pipeline_output``), in the sinks' order.
    output_file_ids: tuple[str, ...] = ()
    error_file_id: str | None = None
    #: Why a failed run failed: ``{"code", "message"}``.
    error: dict[str, Any] | None = None
    # -- how far it got (not shown) ----------------------------------------------------------
    version: int = 0
    owner: str | None = None  # the runner driving it, until ``lease_until``
    lease_until: float = 0.0
    #: Why the remaining items stop: None or ``"cancel"``.
    stop: str | None = None
    #: Whether every item read is terminal up to ``read`` and the source is exhausted.
    source_done: bool = False
    #: The stored prompt of each step that names one, pinned when the run starts:
    #: ``{step: {"id", "version"}}``; every item of the run uses that version.
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN


@dataclass(frozen=True, slots=True)
class RunItem:
    run_id: str
    #: The item's key: unique in its run; a later run of the pipeline skips a key an earlier
    #: run finished (unless asked not to).
    key: str
    seq: int  # 1-based position in the source
    status: ItemStatus = ItemStatus.PENDING
    #: The record the source gave (a JSONL object, a CSV row, a file's path and metadata).
    data: dict[str, Any] = field(default_factory=dict)
    #: The output of each step that ran, by step id.
    steps: dict[str, Any] = field(default_factory=dict)
    #: Why it failed: ``{"step", "code", "message"}``.
    error: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_ITEM


@dataclass(frozen=True, slots=True)
class Tick:
    """One instant of a pipeline's schedule and what became of it."""

    pipeline: str
    at: float  # the scheduled instant (epoch seconds)
    outcome: str  # "fired", "skipped" or "missed"
    recorded_at: float
    run_id: str | None = None


def run_to_doc(run: PipelineRun) -> bytes:
    """The record as JSON (the SQL backends keep it whole beside a few indexed columns)."""
    return orjson.dumps(dataclasses.asdict(run))


def run_from_doc(doc: bytes | str) -> PipelineRun:
    raw = orjson.loads(doc)
    raw["status"] = RunStatus(raw["status"])
    raw["output_file_ids"] = tuple(raw["output_file_ids"])
    if raw["scopes"] is not None:
        raw["scopes"] = tuple(raw["scopes"])
    return PipelineRun(**raw)


def item_to_doc(item: RunItem) -> bytes:
    """The item's ``status``, ``data``, ``steps`` and ``error`` as JSON (its ``run_id``,
    ``key`` and ``seq`` are columns)."""
    return orjson.dumps(
        {"status": item.status, "data": item.data, "steps": item.steps, "error": item.error}
    )


def item_from_doc(run_id: str, key: str, seq: int, doc: bytes | str) -> RunItem:
    raw = orjson.loads(doc)
    return RunItem(
        run_id=run_id, key=key, seq=seq, status=ItemStatus(raw["status"]), data=raw["data"],
        steps=raw["steps"], error=raw["error"],
    )  # fmt: skip
