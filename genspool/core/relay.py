"""The relay: this process's job events to every other process, and theirs to this one.

It runs only when the deployment's :class:`~genspool.core.roles.Signals` carries events across
processes. Publishing never waits: events go to an outbox that one task drains, many per
broadcast. Payloads carry an origin tag (:func:`genspool.core.events.encode`), so a process
drops its own when the server sends them back. Token deltas are many and mostly unread, so a
worker sends a job's deltas only while some process has announced (:class:`Watching`) that it
listens to that job; announcements hold for ``WATCH_TTL_S``. The relay keeps what this
process's subscribers watch (:meth:`Relay.watch`) and announces it again itself, every third of
that time and whenever a process that joins says :class:`Hello`; so a subscriber needs no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from genspool.core.events import Event, Hello, Message, Watching, decode, encode
from genspool.core.roles import Signals

__all__ = ["Relay"]

log = logging.getLogger("genspool.queue")


class Relay:
    #: How long another process's announcement that it listens to a job holds; subscribers
    #: announce again every third of it.
    WATCH_TTL_S = 60.0
    #: Messages sent in one broadcast at most.
    BATCH = 500

    def __init__(self, signals: Signals, deliver: Callable[[list[Event]], None]) -> None:
        self.signals = signals
        self.origin = os.urandom(6).hex()
        self._deliver = deliver
        self._prefix = self.origin.encode() + b" "
        self._watched: dict[str, float] = {}  # job id or "*" -> watched until (monotonic)
        self._local: Counter[str] = Counter()  # what subscribers here watch ("*": everything)
        self._hello = asyncio.Event()  # a process joined: announce everything again
        self._outbox: asyncio.Queue[Sequence[Message]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        # A fresh outbox on this event loop: an asyncio.Queue is bound to the loop that first
        # waited on it, and a process may have run (and closed) the queue on another loop
        # before (the CLI's start-up checks); the old one's waiting messages move over.
        outbox: asyncio.Queue[Sequence[Message]] = asyncio.Queue()
        while not self._outbox.empty():
            outbox.put_nowait(self._outbox.get_nowait())
        self._outbox = outbox
        self._hello = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._send_all()),
            asyncio.create_task(self.signals.listen(self._receive)),
            asyncio.create_task(self._announce_all()),
        ]
        # Subscribers elsewhere announced what they watch before we were here: ask again.
        self._outbox.put_nowait([Hello(self.origin)])

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):  # let queued events go out first
            await asyncio.wait_for(self._outbox.join(), 2.0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a driver that swallows the cancellation must not hang us
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks = []

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for every other process; nothing when the relay is not running."""
        if messages and self._tasks:
            self._outbox.put_nowait(messages)

    def watch(self, ids: Iterable[str] | None) -> None:
        """A subscriber here listens to these jobs (None: to all); announced now and again
        until :meth:`unwatch`."""
        keys = ("*",) if ids is None else tuple(ids)
        self._local.update(keys)
        self.send([Watching(None if ids is None else keys)])

    def unwatch(self, ids: Iterable[str] | None) -> None:
        self._local.subtract(("*",) if ids is None else ids)
        for key in [k for k in (("*",) if ids is None else ids) if self._local[k] <= 0]:
            del self._local[key]

    async def _announce_all(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hello.wait(), self.WATCH_TTL_S / 3)
            self._hello.clear()
            if "*" in self._local:
                self.send([Watching(None)])
            elif self._local:
                self.send([Watching(tuple(self._local))])

    def watched_elsewhere(self, job_id: str) -> bool:
        """Whether another process announced a listener for this job (any thread)."""
        if not self._watched:
            return False
        t = time.monotonic()
        return self._watched.get(job_id, 0.0) > t or self._watched.get("*", 0.0) > t

    async def _send_all(self) -> None:
        outbox = self._outbox
        while True:
            batch = list(await outbox.get())
            taken = 1
            while not outbox.empty() and len(batch) < self.BATCH:
                batch += outbox.get_nowait()
                taken += 1
            try:
                await self.signals.broadcast(encode(self.origin, batch))
            except Exception as exc:  # subscribers fall back to polling the store
                log.warning("could not broadcast %d events: %s", len(batch), exc)
            for _ in range(taken):
                outbox.task_done()

    def _receive(self, payload: bytes) -> None:
        if payload.startswith(self._prefix):
            return  # our own, back from the server: already delivered here
        try:
            _, messages = decode(payload)
        except ValueError:
            log.warning("ignoring a broadcast that is not a genspool event batch")
            return
        until = time.monotonic() + self.WATCH_TTL_S
        events: list[Event] = []
        for m in messages:
            if isinstance(m, Watching):
                for job_id in ("*",) if m.ids is None else m.ids:
                    self._watched[job_id] = until
            elif isinstance(m, Hello):
                self._hello.set()
            else:
                events.append(m)
        self._deliver(events)
        if len(self._watched) > 10_000:
            now = time.monotonic()
            self._watched = {k: v for k, v in self._watched.items() if v > now}
