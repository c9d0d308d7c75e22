"""What the SQL backends' BatchStore roles share: the row of a batch's record (its JSON and the
columns a list, a runner's scan and a compare-and-set read)."""

from __future__ import annotations

from typing import Any

from genspool.core.batch import Batch, batch_to_doc

__all__ = ["batch_row"]


def batch_row(batch: Batch) -> dict[str, Any]:
    """The named parameters of ``batch_put`` and ``batch_update`` (``version`` is the stored
    one a write expects; the caller sets it)."""
    return {
        "id": batch.id,
        "tenant": batch.tenant,
        "active": not batch.terminal,
        "version": batch.version,
        "next": batch.version,
        "doc": batch_to_doc(batch),
    }
