"""In-process publish/subscribe of job events.

Every state change and every streamed token of a job is published here as a small dict
(``{"id", "status", ...}``). Subscribers listen to a set of job ids, or to all jobs with
``None``. Delivery across processes is the backend's business (see ``Backend.poll_events``);
this hub only fans out inside one process, without ever blocking the publisher.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["EventHub", "Subscription"]

Event = dict[str, Any]
_ALL = "*"


class Subscription:
    """A queue of events for some job ids; ``add`` widens it while it is open."""

    def __init__(self, hub: EventHub, ids: Iterable[str] | None, maxsize: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.keys: set[str] = set(ids) if ids is not None else {_ALL}
        self.dropped = 0

    def add(self, ids: Iterable[str]) -> None:
        new = set(ids) - self.keys
        self.keys |= new
        for key in new:
            self._hub._subs[key].add(self)

    def discard(self, job_id: str) -> None:
        if job_id in self.keys:
            self.keys.discard(job_id)
            self._hub._unlink(job_id, self)

    def put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A slow consumer loses token deltas, never the publisher's time; state events are
            # recovered by the subscriber's own poll of the store.
            self.dropped += 1

    def close(self) -> None:
        for key in list(self.keys):
            self._hub._unlink(key, self)
        self.keys.clear()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    def __init__(self, maxsize: int = 10_000) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._maxsize = maxsize

    def subscribe(self, ids: Iterable[str] | None = None) -> Subscription:
        sub = Subscription(self, ids, self._maxsize)
        for key in sub.keys:
            self._subs[key].add(sub)
        return sub

    def wants(self, job_id: str) -> bool:
        """Whether anyone listens to this job now (cheap; safe to call from any thread)."""
        return bool(self._subs) and (job_id in self._subs or _ALL in self._subs)

    def publish(self, event: Event) -> None:
        if not self._subs:
            return
        for sub in (*self._subs.get(event["id"], ()), *self._subs.get(_ALL, ())):
            sub.put(event)

    def publish_many(self, events: Iterable[Event]) -> None:
        if self._subs:
            for event in events:
                self.publish(event)

    def _unlink(self, key: str, sub: Subscription) -> None:
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[key]
