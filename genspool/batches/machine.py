"""Every transition of a batch, decided here and nowhere else (as :mod:`genspool.core.machine`
is for jobs): pure functions of a record and the time, each returning the next record, its
``version`` one up, or None when the transition does not apply. The store writes a result only
over the version it was decided from, so two processes never both apply a change to one state.

The runner that drives a batch holds a lease on it (``owner``, ``lease_until``) and renews it
with every write; a runner that died leaves a lease that runs out, and another takes the batch
over from its cursors (:mod:`genspool.batches.runner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from genspool.core.batch import Batch, BatchStatus

__all__ = [
    "CANCELLABLE",
    "cancel",
    "claim",
    "enqueued",
    "expire",
    "finished",
    "lines_written",
    "pending",
    "renew",
    "validated",
    "wrote",
]

#: What a user may cancel (OpenAI's: not once every line is done).
CANCELLABLE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
#: How a stopped batch ends, by why it stopped.
_ENDS = {
    None: (BatchStatus.COMPLETED, "completed_at"),
    "cancel": (BatchStatus.CANCELLED, "cancelled_at"),
    "expire": (BatchStatus.EXPIRED, "expired_at"),
}


def _next(b: Batch, **changes: Any) -> Batch:
    return dataclasses.replace(b, version=b.version + 1, **changes)


def _held(b: Batch, now: float, lease_s: float, **changes: Any) -> Batch:
    """A runner's write: the lease goes on with it."""
    return _next(b, lease_until=now + lease_s, **changes)


def claim(b: Batch, owner: str, now: float, lease_s: float) -> Batch | None:
    """Take the batch for ``owner`` unless another runner's lease still holds it."""
    if b.terminal or (b.owner not in (None, owner) and b.lease_until > now):
        return None
    return _next(b, owner=owner, lease_until=now + lease_s)


def renew(b: Batch, now: float, lease_s: float) -> Batch:
    return _held(b, now, lease_s)


def validated(
    b: Batch,
    total: int,
    errors: Sequence[dict[str, Any]],
    now: float,
    lease_s: float,
    prompts: Mapping[str, int] | None = None,
) -> Batch | None:
    """The input was read: ``in_progress`` with ``total`` lines and the versions its lines'
    prompt labels are pinned to, or ``failed`` with the lines' errors (then no line runs). A
    batch stopped meanwhile ends as it was told to."""
    if b.status is not BatchStatus.VALIDATING:
        return None
    if b.stop is not None:
        return finished(b, None, None, now)
    if errors:
        return _next(b, status=BatchStatus.FAILED, failed_at=now, errors=tuple(errors), owner=None)
    return _held(
        b, now, lease_s, status=BatchStatus.IN_PROGRESS, in_progress_at=now, total=total,
        prompts=dict(prompts or {}),
    )  # fmt: skip


def enqueued(b: Batch, count: int, now: float, lease_s: float) -> Batch | None:
    """Lines 1..``count`` are jobs now (the input cursor only moves forward)."""
    if b.terminal or count <= b.enqueued:
        return None
    return _held(b, now, lease_s, enqueued=min(count, b.total))


def wrote(
    b: Batch,
    *,
    lines: int,
    completed: int,
    failed: int,
    out_lines: int,
    err_lines: int,
    usage: Mapping[str, int],
    now: float,
    lease_s: float,
) -> Batch | None:
    """One more segment committed, holding the next ``lines`` lines of output."""
    if b.terminal or lines <= 0 or b.written + lines > b.total:
        return None
    summed = dict(b.usage)
    for key, value in usage.items():
        summed[key] = summed.get(key, 0) + value
    return _held(
        b, now, lease_s,
        written=b.written + lines, segments=b.segments + 1,
        completed=b.completed + completed, failed=b.failed + failed,
        out_lines=b.out_lines + out_lines, err_lines=b.err_lines + err_lines, usage=summed,
    )  # fmt: skip


def lines_written(b: Batch, now: float, lease_s: float) -> Batch | None:
    """Every line is in the output: ``finalizing`` (a stopped batch goes straight to its end
    once its files are made)."""
    if b.status is not BatchStatus.IN_PROGRESS or b.written < b.total or b.stop is not None:
        return None
    return _held(b, now, lease_s, status=BatchStatus.FINALIZING, finalizing_at=now)


def pending(
    b: Batch, output_id: str | None, error_id: str | None, now: float, lease_s: float
) -> Batch:
    """The ids of the files being made, kept so that a resumed finalizing reuses a file it
    committed before it died rather than making a second one."""
    return _held(b, now, lease_s, pending_files=(output_id, error_id))


def cancel(b: Batch, now: float) -> Batch | None:
    """A user's cancel: ``cancelling`` until the runner has cancelled the lines still to run
    and written the files."""
    if b.status not in CANCELLABLE or b.stop is not None:
        return None
    return _next(b, status=BatchStatus.CANCELLING, cancelling_at=now, stop="cancel")


def expire(b: Batch, now: float) -> Batch | None:
    """Past its completion window: the lines still to run stop (``batch_expired``)."""
    if b.status not in CANCELLABLE or b.stop is not None or now < b.expires_at:
        return None
    return _next(b, stop="expire")


def finished(b: Batch, output_id: str | None, error_id: str | None, now: float) -> Batch | None:
    """The files are made: the batch ends as completed, cancelled or expired."""
    if b.terminal:
        return None
    status, stamp = _ENDS[b.stop]
    changes: dict[str, Any] = {stamp: now}
    return _next(
        b, status=status, output_file_id=output_id, error_file_id=error_id, owner=None,
        pending_files=(None, None), **changes,
    )  # fmt: skip
