"""Every transition of a pipeline run, decided here and nowhere else (as
:mod:`genspool.batches.machine` is for batches): pure functions of a record and the time, each
returning the next record with its ``version`` one up, or None when the transition does not
apply. The store writes a result only over the version it was decided from.

The runner driving a run holds a lease on it (``owner``, ``lease_until``) and renews it with
every write; when it dies the lease runs out and another runner resumes the run from its
cursor (``read``) and its items' stored states (:mod:`genspool.pipelines.runner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from genspool.core.pipeline import PipelineRun, RunStatus

__all__ = [
    "CANCELLABLE",
    "cancel",
    "claim",
    "counted",
    "fail",
    "finalizing",
    "finished",
    "pinned",
    "read",
    "renew",
    "start",
]

#: What a user may cancel.
CANCELLABLE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


def _next(r: PipelineRun, **changes: Any) -> PipelineRun:
    return dataclasses.replace(r, version=r.version + 1, **changes)


def _held(r: PipelineRun, now: float, lease_s: float, **changes: Any) -> PipelineRun:
    return _next(r, lease_until=now + lease_s, **changes)


def claim(r: PipelineRun, owner: str, now: float, lease_s: float) -> PipelineRun | None:
    """Take the run for ``owner`` unless another runner's lease still holds it."""
    if r.terminal or (r.owner not in (None, owner) and r.lease_until > now):
        return None
    return _next(r, owner=owner, lease_until=now + lease_s)


def renew(r: PipelineRun, now: float, lease_s: float) -> PipelineRun:
    return _held(r, now, lease_s)


def start(r: PipelineRun, now: float, lease_s: float) -> PipelineRun | None:
    if r.status is not RunStatus.QUEUED:
        return None
    return _held(r, now, lease_s, status=RunStatus.RUNNING, started_at=now)


def pinned(
    r: PipelineRun, prompts: Mapping[str, Mapping[str, Any]], now: float, lease_s: float
) -> PipelineRun | None:
    """The versions of its steps' stored prompts, ``{step: {"id", "version"}}``, fixed for the
    whole run (a runner that takes it over uses them too)."""
    if r.terminal:
        return None
    return _held(r, now, lease_s, prompts={k: dict(v) for k, v in prompts.items()})


def read(r: PipelineRun, n: int, *, exhausted: bool, now: float, lease_s: float) -> PipelineRun:
    """``n`` more items registered; ``exhausted``: the source has no more."""
    total = r.read + n if exhausted else None
    return _held(r, now, lease_s, read=r.read + n, total=total, source_done=exhausted)


def counted(
    r: PipelineRun,
    *,
    succeeded: int = 0,
    failed: int = 0,
    skipped: int = 0,
    usage: Mapping[str, int] | None = None,
    now: float,
    lease_s: float,
) -> PipelineRun:
    """Items that ended since the last count (the counts shown while it runs)."""
    merged = dict(r.usage)
    for k, v in (usage or {}).items():
        merged[k] = merged.get(k, 0) + v
    return _held(
        r, now, lease_s, succeeded=r.succeeded + succeeded, failed=r.failed + failed,
        skipped=r.skipped + skipped, usage=merged,
    )  # fmt: skip


def cancel(r: PipelineRun, now: float) -> PipelineRun | None:
    """A user's cancel: ``cancelling`` at once; the runner stops the items in flight, writes
    the sinks with the items finished so far and ends it ``cancelled``."""
    if r.status not in CANCELLABLE:
        return None
    return _next(r, status=RunStatus.CANCELLING, cancelling_at=now, stop="cancel")


def finalizing(
    r: PipelineRun, counts: Mapping[str, int], usage: Mapping[str, int], now: float, lease_s: float
) -> PipelineRun | None:
    """Every item read has ended (or the run was cancelled): the exact counts, and the sinks
    to write. A cancelled run stays ``cancelling`` while they are written."""
    if r.status not in (RunStatus.RUNNING, RunStatus.CANCELLING):
        return None
    status = RunStatus.CANCELLING if r.stop else RunStatus.FINALIZING
    return _held(
        r, now, lease_s, status=status, finalizing_at=now, succeeded=counts["succeeded"],
        failed=counts["failed"], skipped=counts["skipped"], usage=dict(usage),
    )  # fmt: skip


def finished(
    r: PipelineRun, outputs: tuple[str, ...], error_file: str | None, now: float
) -> PipelineRun | None:
    if r.terminal:
        return None
    status = RunStatus.CANCELLED if r.stop else RunStatus.COMPLETED
    return _next(
        r, status=status, ended_at=now, output_file_ids=outputs, error_file_id=error_file,
        owner=None,
    )  # fmt: skip


def fail(r: PipelineRun, code: str, message: str, now: float) -> PipelineRun | None:
    """The run cannot go on (its source cannot be read, a sink cannot be written)."""
    if r.terminal:
        return None
    error = {"code": code, "message": message}
    return _next(r, status=RunStatus.FAILED, ended_at=now, error=error, owner=None)
