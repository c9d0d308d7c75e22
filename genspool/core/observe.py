"""Hooks the queue and the worker call as jobs move, for whoever measures them (metrics).

The core calls an :class:`Observer` at a handful of points and knows nothing of what it does:
this base does nothing, so a deployment without metrics pays one method call per batch. The
queue holds one (``Queue.observer``) and the worker calls the queue's, so that one attachment
sees every transition made in a process, whichever part made it. A hook must not raise nor
block: it runs on the write path, after the write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from genspool.core.job import Job

__all__ = ["Observer", "Timed"]

_NOTHING = contextlib.nullcontext()


class Timed(Protocol):
    """A job's call in flight: when it started (event-loop time)."""

    started: float


class Observer:
    """Every hook a no-op; a subclass overrides those it measures."""

    def submitting(self, jobs: Sequence[Job]) -> contextlib.AbstractContextManager[object]:
        """Around a submit's write, before it: a hook may still add to the jobs' metadata
        (tracing stores each job's trace context there). The base's costs one shared object."""
        return _NOTHING

    def submitted(self, jobs: Sequence[Job]) -> None:
        """New jobs were stored (idempotent resubmissions are not passed)."""

    def leased(self, jobs: Sequence[Job]) -> None:
        """Jobs were leased: each is now running, ``started_at`` set."""

    def written(self, jobs: Sequence[Job]) -> None:
        """A transition was written for each job (ended, retrying, handed back, replayed)."""

    def started(self, model: str, jobs: Sequence[Job]) -> None:
        """A worker started one call of ``model`` for ``jobs`` (a batch, or joiners of one)."""

    def settled(
        self,
        model: str,
        outcomes: Sequence[tuple[Job, Any]],
        runs: Mapping[str, Timed],
        now: float,
    ) -> None:
        """A worker knows these jobs' outcomes (a result dict or an exception); ``runs`` holds
        the calls still recorded by job id, ``now`` is the event loop's time."""
