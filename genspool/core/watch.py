"""Two ways the queue facade shares one round trip among many callers.

:class:`StorePoller` reads the store once per interval for every job that any subscriber in
this process watches, and publishes what changed to the process's event hub, so a thousand
waiters cost one query, not a thousand, and a subscriber waits on its event queue alone. It is
the safety net under the events: changes made in another process when the backend carries no
events across processes (then every ``interval`` s), or an event lost while a connection was
down (then rarely). A terminal state is published on every round while somebody still watches
the job: that somebody missed it.

:class:`GroupCommit` writes the submissions that arrive while a write is under way together,
in the next write: one transaction for many concurrent submits, with no added wait for a lone
one (PostgreSQL's and SQLite's own group commit, one level up).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

from genspool.core.events import Event, JobChanged
from genspool.core.job import Job

__all__ = ["GroupCommit", "StorePoller"]

log = logging.getLogger("genspool.queue")

T = TypeVar("T")
R = TypeVar("R")


class StorePoller:
    #: Jobs read per query.
    CHUNK = 1000

    def __init__(
        self,
        read: Callable[[Sequence[str]], Awaitable[list[Job]]],
        publish: Callable[[list[Event]], None],
        interval: Callable[[], float],
    ) -> None:
        self._read, self._publish, self._interval = read, publish, interval
        self._ids: Counter[str] = Counter()
        self._last: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, ids: Iterable[str], known: dict[str, tuple[str, int]]) -> None:
        """Poll these jobs until :meth:`unwatch`; ``known`` is their state as last yielded."""
        for job_id in ids:
            self._ids[job_id] += 1
            if job_id in known:
                self._last.setdefault(job_id, known[job_id])
        task = self._task
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    def unwatch(self, ids: Iterable[str]) -> None:
        for job_id in ids:
            self._ids[job_id] -= 1
            if self._ids[job_id] <= 0:
                del self._ids[job_id]
                self._last.pop(job_id, None)

    async def _run(self) -> None:
        while self._ids:
            await asyncio.sleep(self._interval())
            ids = sorted(self._ids)
            for start in range(0, len(ids), self.CHUNK):
                chunk = ids[start : start + self.CHUNK]
                try:
                    found = {j.id: j for j in await self._read(chunk)}
                except Exception as exc:  # the backend is down: the next round tries again
                    log.debug("polling %d watched jobs failed: %s", len(chunk), exc)
                    continue
                self._publish(self._changed(chunk, found))

    def _changed(self, ids: list[str], found: dict[str, Job]) -> list[Event]:
        events: list[Event] = []
        for job_id in ids:
            if job_id not in self._ids:
                continue  # unwatched while we read
            job = found.get(job_id)
            event = JobChanged.not_found(job_id) if job is None else JobChanged.of(job)
            state = (event.status, event.attempts)
            if event.ends or self._last.get(job_id) != state:
                self._last[job_id] = state
                events.append(event)
        return events


class GroupCommit(Generic[T, R]):
    """Calls ``write`` with the items of every caller that arrived while the last write ran.

    ``write`` returns one result per item, in order. When a shared write fails, each caller's
    items are written again alone, so one caller's bad item fails that caller only.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._write = write
        self._pending: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def __call__(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[R]] = loop.create_future()
        self._pending.append((items, done))
        task = self._flushing
        if task is None or task.done() or task.get_loop() is not loop:
            # Its own task: a caller cancelled mid-write must not strand the others.
            self._flushing = loop.create_task(self._flush())
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            if len(group) == 1:
                await self._one(*group[0])
                continue
            try:
                results = await self._write([item for items, _ in group for item in items])
            except Exception:
                for items, done in group:
                    await self._one(items, done)
                continue
            at = 0
            for items, done in group:
                if not done.done():
                    done.set_result(results[at : at + len(items)])
                at += len(items)

    async def _one(self, items: Sequence[T], done: asyncio.Future[list[R]]) -> None:
        try:
            result = await self._write(list(items))
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        except BaseException:
            done.cancel()
            raise
        else:
            if not done.done():
                done.set_result(result)
