"""What one page's live stream follows, and what it draws for the page
(:mod:`~genspool.api.ui.live` is the stream itself: its protocol, checks and writes).

:class:`Live` keeps the jobs a page shows live, each with how it is drawn (a kind), and turns
their events into frames: a job's state into the page's fragment for it (the same templates
as the views), a token delta into text for its box, a fan-out's landed branch into its column.
It follows them by the queue's subscriptions by job id (their current state first, then their
events); a feed follows every job event of this process and adds the jobs that enter a view's
first page; the board is redrawn every second. Another tenant's job is never read into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.routes_push import SLOW, Connection
from genspool.api.ui.answers import answer_text, column, columns, landed_of
from genspool.api.ui.dead_letters import Row
from genspool.api.ui.jobs import Filters, trace_id
from genspool.api.ui.overview import board_of
from genspool.api.ui.pages import fragment
from genspool.api.ui.session import SID_COOKIE
from genspool.core.events import NOT_FOUND, Event, JobChanged, JobProgress, Subscription, TokenDelta
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue
from genspool.exceptions import GenspoolError

__all__ = ["Feed", "Live", "Watched", "hold", "sse"]

log = logging.getLogger("genspool.api")

#: How often the overview's board is redrawn (sent only when it changed).
BOARD_EVERY_S = 1.0
#: How long the page waits before it reconnects a dropped stream (EventSource's ``retry``).
RETRY_MS = 2000
_DELTAS = frozenset({"job", "play"})
#: Jobs a feed remembers having passed over (another tenant's, another model's), not to read
#: them again at each of their events.
_PASSED = 10_000
#: Events a feed reads at once at most.
_FEED_BATCH = 1000


def sse(event: str, data: str) -> bytes:
    """One Server-Sent Event: its name, and ``data`` over as many ``data:`` lines as it has."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Feed:
    """New rows for a view's first page: how they are drawn (``row``, ``dead``), the view's
    filters, and its ``since`` as the lowest job id it shows."""

    kind: str
    filters: Filters
    floor: str | None = None


@dataclass(slots=True)
class Watched:
    """A job a stream follows: how it is drawn, as last known, and (a fan-out) the branches
    that landed, by name."""

    kind: str
    job: Job
    landed: dict[str, dict[str, Any]] = field(default_factory=dict)


class Live:
    """One page's stream: what it follows, and the frames it draws for the page."""

    def __init__(
        self,
        request: Request,
        caller: Caller,
        conn: Connection,
        context: dict[str, Any],
        feed: Feed | None = None,
        marks: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.request, self.caller, self.conn, self.context = request, caller, conn, context
        self.svc = services(request)
        self.queue = self.svc.queue
        self.feed, self.marks = feed, frozenset(marks)
        self.channel = secrets.token_urlsafe(16)
        self.session = request.cookies.get(SID_COOKIE, "")
        self.watched: dict[str, Watched] = {}
        self._fed: OrderedDict[str, None] = OrderedDict()  # feed rows followed, oldest first
        self._passed: OrderedDict[str, None] = OrderedDict()
        if self.endless:
            conn.live.add("*")  # open for as long as the page is: never idle

    @property
    def endless(self) -> bool:
        """Whether the stream stays open with no job left to follow."""
        return self.feed is not None or bool(self.marks)

    # -- frames -----------------------------------------------------------------------------

    def put(self, event: str, data: str, *, delta: bool = False) -> None:
        if not self.conn.outbox.put(sse(event, data), delta=delta):
            self.conn.end(SLOW)

    def render(self, template: str, **values: Any) -> str:
        return fragment(template, self.context, now=self.queue.clock(), **values)

    def draw(self, w: Watched) -> None:
        """Send the page what ``w`` looks like now."""
        job = w.job
        if w.kind == "row":
            html = self.render("_job_row.html", job=job)
        elif w.kind == "dl":
            html = self.render("_dead_letter_row.html", row=Row(job, replayed=True))
        elif w.kind == "job":
            html = self.render(
                "_job_detail.html", job=job, history=job.attempt_history(), trace=trace_id(job),
                terminal=job.terminal,
            ) + self.render("_job_stream.html", job=job)  # fmt: skip
        elif w.kind == "play" and job.terminal:
            html = self.render("_play_answer.html", job=job, text=answer_text(job), channel="")
        elif w.kind == "fan" and job.terminal:
            html = self.render(
                "_play_compare.html", job=job, columns=columns(job, w.landed), channel=""
            )
        else:  # a playground answer or compare that runs: its badge (not the text so far)
            html = self.render("_play_status.html", job=job, prefix=w.kind)
        self.put("swap", html)

    def _column(self, w: Watched, name: str) -> None:
        planned = w.job.body.get("branches")
        for i, branch in enumerate(planned if isinstance(planned, list) else []):
            if isinstance(branch, dict) and branch.get("name") == name:
                col = column(i, branch, w.landed[name])
                self.put("swap", self.render("_play_column.html", col=col, parent=w.job.id))

    # -- following --------------------------------------------------------------------------

    async def start(self, items: Sequence[tuple[str, str]], setups: asyncio.Semaphore) -> None:
        """Say hello, draw every item as it is now, and follow them."""
        self.conn.outbox.put(f"retry: {RETRY_MS}\n\n".encode())
        self.put("hello", self.channel)
        async with setups:
            await self.watch(items)
        if self.feed is not None:
            self._task(self._feed(self.feed))
        if "board" in self.marks:
            self._task(self._board())
        self._maybe_done()

    async def watch(self, items: Sequence[tuple[str, str]]) -> None:
        """Follow ``items`` (kind, job id): read once, another tenant's dropped, each drawn."""
        wanted = {job_id: kind for kind, job_id in items if job_id not in self.watched}
        if not wanted:
            return
        sees = self.caller.sees
        found = await self.queue.get_many(list(wanted))
        taken = [Watched(wanted[j.id], j) for j in found if sees is None or j.tenant == sees]
        for w in taken:
            if w.kind == "fan":
                w.landed = landed_of(w.job)
            self.draw(w)
            if not w.job.terminal:
                self.watched[w.job.id] = w
        for deltas in (True, False):
            jobs = [w.job for w in taken if not w.job.terminal and (w.kind in _DELTAS) == deltas]
            if jobs:
                self.conn.live.update(j.id for j in jobs)
                ids = [j.id for j in jobs]
                self._task(self._follow(self.queue.subscribe(ids, tenant=sees, since=jobs,
                                                             deltas=deltas)))  # fmt: skip

    def adopt(self, kind: str, job: Job, held: Subscription) -> bool:
        """Follow a job the page just submitted, starting with what ``held`` caught since
        before it was submitted (:func:`hold`). Nothing here awaits, so no event falls between
        the two subscriptions. False when the stream follows as many jobs as it may, or ended:
        the page then asks for the job itself."""
        if self.conn.outbox.ended or len(self.watched) >= self.conn.limits.subscriptions:
            return False
        events = self.queue.subscribe(
            [job.id], tenant=self.caller.sees, since=[job], deltas=kind in _DELTAS
        )
        early: list[Event] = []
        while not held.queue.empty():
            early.append(held.queue.get_nowait())
        held.close()
        self.watched[job.id] = Watched(kind, job)
        self.conn.live.add(job.id)
        self._task(self._follow(events, early))
        return True

    async def _follow(
        self, events: AsyncGenerator[Event, None], early: Sequence[Event] = ()
    ) -> None:
        async with contextlib.aclosing(events):
            for event in early:
                await self.on(event)
            async for event in events:
                await self.on(event)
                if self.conn.outbox.ended:
                    return

    async def on(self, event: Event) -> None:
        """Draw what ``event`` changed on the page."""
        w = self.watched.get(event.id)
        if w is None:
            return
        if isinstance(event, TokenDelta):
            if w.kind in _DELTAS:
                text = orjson.dumps({"id": event.id, "text": event.delta}).decode()
                self.put("delta", text, delta=True)
            return
        if isinstance(event, JobProgress):
            if w.kind == "fan" and event.kind == "branch" and "name" in event.data:
                w.landed[str(event.data["name"])] = event.data
                self._column(w, str(event.data["name"]))
            return
        if event.status == NOT_FOUND:
            return self._drop(event.id)
        if w.kind == "job" or (w.kind == "fan" and event.ends):
            try:  # its attempts, its whole result
                w.job = await self.queue.get(event.id, self.caller.sees)
            except GenspoolError:
                return self._drop(event.id)
        else:
            w.job = dataclasses.replace(
                w.job, status=JobStatus(event.status), attempts=event.attempts,
                result=event.result, error=event.error,
            )  # fmt: skip
        self.draw(w)
        if event.ends:
            self._drop(event.id)

    def _drop(self, job_id: str) -> None:
        self.watched.pop(job_id, None)
        self._fed.pop(job_id, None)
        self.conn.live.discard(job_id)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self.watched and not self.endless and not self.conn.outbox.ended:
            self.put("done", "")
            self.conn.end(at_once=False)

    # -- new rows ---------------------------------------------------------------------------

    async def _feed(self, feed: Feed) -> None:
        """Every job event of this process: a job that enters the view is read, checked
        against the view (tenant, model, since) and added on top, then followed."""
        with self.queue.events.subscribe(None, deltas=False) as sub:
            while not self.conn.outbox.ended:
                batch = [await sub.queue.get()]
                while not sub.queue.empty() and len(batch) < _FEED_BATCH:
                    batch.append(sub.queue.get_nowait())
                added = await self._enter(feed, batch)
                for event in batch:  # those just read are drawn as read: newer than these
                    if event.id in self._fed and event.id not in added:
                        await self.on(event)

    async def _enter(self, feed: Feed, batch: list[Event]) -> set[str]:
        fresh = list(dict.fromkeys(
            e.id for e in batch
            if isinstance(e, JobChanged) and e.id not in self.watched
            and e.id not in self._passed and self._enters(feed, e)
        ))  # fmt: skip
        if not fresh:
            return set()
        found = {j.id: j for j in await self.queue.get_many(fresh)}
        shown = [found[i] for i in fresh if i in found and self._shows(feed, found[i])]
        for job_id in fresh:
            _remember(self._passed, job_id, _PASSED)
        if not shown:
            return set()
        rows = []
        for job in shown:
            if feed.kind == "row":
                rows.append(self.render("_job_row.html", job=job))
                if not job.terminal:
                    self.watched[job.id] = Watched("row", job)
                    self._passed.pop(job.id, None)
                    for gone in _remember(self._fed, job.id, feed.filters.limit):
                        self.watched.pop(gone, None)  # below the page's last row by now
            else:
                rows.append(self.render("_dead_letter_row.html", row=Row(job)))
        self.put("add", "".join(rows))
        return {j.id for j in shown}

    def _enters(self, feed: Feed, event: JobChanged) -> bool:
        """Whether the job of ``event`` just came into the view: a new job (or a replayed
        one), or one that reached the status the view shows."""
        status = feed.filters.status
        if status is None:
            return event.status == JobStatus.QUEUED.value and event.attempts == 0
        return event.status == status.value

    def _shows(self, feed: Feed, job: Job) -> bool:
        f, sees = feed.filters, self.caller.sees
        return (
            (sees is None or job.tenant == sees)
            and (f.tenant is None or job.tenant == f.tenant)
            and (f.model is None or job.model == f.model)
            and (feed.floor is None or job.id >= feed.floor)
        )

    async def _board(self) -> None:
        metrics = getattr(self.request.app.state, "metrics", None)
        shown = ""
        while not self.conn.outbox.ended:
            try:
                board = board_of(self.request)
                rows = await board.rows(self.svc, metrics)
            except Exception as exc:  # the store is away: the board shows what it had
                log.debug("could not read the board: %s", exc)
            else:
                html = self.render("_board.html", rows=rows, workers=board.workers)
                if html != shown:
                    self.put("swap", html)
                    shown = html
            await asyncio.sleep(BOARD_EVERY_S)

    def _task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.conn.feeds.add(task)
        task.add_done_callback(_finished)
        task.add_done_callback(self.conn.feeds.discard)


def _remember(kept: OrderedDict[str, None], key: str, limit: int) -> list[str]:
    """Keep ``key`` (newest last); the keys let go to stay within ``limit``."""
    kept[key] = None
    gone = []
    while len(kept) > limit:
        gone.append(kept.popitem(last=False)[0])
    return gone


def _finished(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("a live stream's feed failed: %r", exc, exc_info=exc)


@contextlib.contextmanager
def hold(queue: Queue, job_id: str, *, deltas: bool) -> Iterator[Subscription]:
    """Catch a job's events from before it is submitted, for :meth:`Live.adopt`: a worker
    streams tokens only for a job that has a listener when it starts."""
    held = queue.events.subscribe([job_id], deltas=deltas)
    if deltas:
        queue.relay.watch([job_id])  # a worker in another process streams them too
    try:
        yield held
    finally:
        held.close()
        if deltas:
            queue.relay.unwatch([job_id])
