"""The OpenAI Batch API on genspool's queue: each line of an input file an ordinary job.

Modules: :mod:`.machine` (every transition of a batch), :mod:`.lines` (reading and checking
the input as it streams), :mod:`.output` (the output lines, written in segments),
:mod:`.runner` (drives batches, in any API process), :mod:`.service` (:class:`Batches`, what
the routes call). The record is :class:`genspool.core.batch.Batch`, kept by the store's
:class:`~genspool.core.roles.BatchStore` role.
"""

from __future__ import annotations

from genspool.batches.runner import BATCH_PRIORITY, BatchRunner
from genspool.batches.service import Batches, BatchPage, parse_window

__all__ = ["BATCH_PRIORITY", "BatchPage", "BatchRunner", "Batches", "parse_window"]
