"""``/ui/live``: one Server-Sent Events stream per page, authenticated by the session cookie as
every view is, that keeps what the page shows current without a reload.

A page marks what it shows live with ``data-live`` (``kind:job id``, or ``board`` and
``playground``), and the first page of the jobs and dead-letter views asks for new rows
(``data-live-feed``). The page's script (``static/genspool-ui.js``) opens
``GET /ui/live?watch=...&feed=...`` and applies what comes:

- ``swap``: HTML whose top-level elements replace the page's elements of the same id (unless
  both carry the same ``data-v``: the state they show);
- ``add``: rows for the top of the list: jobs that entered its filters after it was drawn;
- ``delta``: ``{"id", "text"}``, text a running job just generated, appended to its box;
- ``hello``: the stream's channel, which the page's later requests name (header
  ``X-Live-Channel``) so that the job the playground submits is followed here from before it
  exists: no token is missed;
- ``done``: nothing is left to follow; the page closes the stream.

Kinds: ``row`` (a row of the jobs list), ``dl`` (a replayed dead letter's row), ``job`` (a job's
page: its detail redrawn at each change, its tokens while it runs), ``play`` (an answer in the
playground), ``fan`` (a compare in the playground: each branch's column as it lands); ``board``
redraws the overview's board every second when it changed. What a stream follows and how it
draws it is :mod:`~genspool.api.ui.follow`; this module is the stream: its checks and writes.

Fed as the API's push routes are (:mod:`genspool.api.routes_push`): the queue's subscriptions
by job id (the current state first; read from the store every ``Queue.POLL_S`` where the
backend carries no events between processes), token deltas in process, and for a feed every
job event this process sees (on SQLite, the jobs submitted through this process). A tenant's
key follows its tenant's jobs only: another's are never drawn into its stream. Bounded like the
push routes (:class:`~genspool.api.routes_push.PushGate` of the UI app: connections per key
and per process, the outbox a slow page may hold, idle streams, revoked keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from genspool.api.auth import Caller
from genspool.api.deps import services
from genspool.api.routes_push import (
    LAST_WRITE_S,
    SSE_HEADERS,
    PushGate,
    gate_of,
    sse_body,
    until_disconnected,
)
from genspool.api.shutdown import Shutdown, shutdown_of
from genspool.api.ui.follow import Feed, Live
from genspool.api.ui.jobs import MAX_LIVE, id_at, parse_filters, parse_instant
from genspool.api.ui.pages import page_context
from genspool.api.ui.session import SID_COOKIE, UiCaller, ui_requires
from genspool.core.job import JobStatus
from genspool.core.keys import Scope
from genspool.exceptions import InvalidRequest

__all__ = ["CHANNEL_HEADER", "LiveStream", "live_of", "parse_feed", "parse_watch", "router"]

log = logging.getLogger("genspool.api")

router = APIRouter(include_in_schema=False)

KINDS = ("row", "dl", "job", "play", "fan")
MARKS = ("board", "playground")
#: ``feed=`` of each view, and how its new rows are drawn.
FEEDS = {"jobs": "row", "dead-letters": "dead"}
CHANNEL_HEADER = "X-Live-Channel"
_JOB_ID = re.compile(r"^job_[0-9a-f]{1,40}$")
#: Frames sent in one write at most.
_BATCH = 64
_HEAD = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()),
]


def parse_watch(text: str) -> tuple[list[tuple[str, str]], set[str]]:
    """``watch=``: the (kind, job id) pairs, first kind of an id kept, and the marks."""
    items: dict[str, str] = {}
    marks: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in MARKS:
            marks.add(part)
            continue
        kind, _, job_id = part.partition(":")
        if kind not in KINDS or not _JOB_ID.match(job_id):
            raise InvalidRequest(
                f"watch: {part[:60]!r} is neither kind:job id (kinds: {', '.join(KINDS)}) nor"
                f" one of {', '.join(MARKS)}",
                param="watch",
            )
        items.setdefault(job_id, kind)
    if len(items) > MAX_LIVE:
        raise InvalidRequest(f"watch: at most {MAX_LIVE} jobs on one stream", param="watch")
    return [(kind, job_id) for job_id, kind in items.items()], marks


def parse_feed(name: str, request: Request, caller: Caller) -> Feed | None:
    if not name:
        return None
    kind = FEEDS.get(name)
    if kind is None:
        raise InvalidRequest(f"feed: {name[:40]!r} is not one of {', '.join(FEEDS)}", param="feed")
    query = dict(request.query_params)
    if kind == "dead":
        query["status"] = JobStatus.FAILED.value
    f = parse_filters(query, caller)
    if f.after is not None or f.until is not None:
        raise InvalidRequest(
            "feed: only a view's first page without 'until' gets new rows", param="feed"
        )
    now = services(request).queue.clock()
    floor = id_at(parse_instant(f.since, now, "since")) if f.since is not None else None
    return Feed(kind, f, floor)


def _channels(request: Request) -> dict[str, Live]:
    state = request.app.state
    found: dict[str, Live] | None = getattr(state, "live_channels", None)
    if found is None:
        found = state.live_channels = {}
    return found


def live_of(request: Request, caller: Caller) -> Live | None:
    """The open stream of the page that sent ``request`` (its ``X-Live-Channel``), if it
    belongs to this browser session and this key."""
    live = _channels(request).get(request.headers.get(CHANNEL_HEADER, ""))
    if live is None or live.conn.outbox.ended:
        return None
    mine = secrets.compare_digest(live.session, request.cookies.get(SID_COOKIE, ""))
    same_key = (live.caller.key.id if live.caller.key else None) == (
        caller.key.id if caller.key else None
    )
    return live if mine and same_key else None


@router.get("/live")
@ui_requires(Scope.READ)
async def live(request: Request, caller: UiCaller, watch: str = "", feed: str = "") -> Response:
    items, marks = parse_watch(watch)
    chosen = parse_feed(feed, request, caller)
    svc = services(request)
    gate = gate_of(request, svc)
    conn = gate.admit(caller)  # 429 past the limits
    try:
        context = await page_context(request, caller)
    except BaseException:
        gate.release(conn)
        raise
    stream = Live(request, caller, conn, context, chosen, marks)
    return LiveStream(stream, items, gate, shutdown_of(request))


class LiveStream(Response):
    """The ``text/event-stream`` answer of one page; each write bounded as the push routes'."""

    media_type = "text/event-stream"

    def __init__(
        self, live: Live, items: list[tuple[str, str]], gate: PushGate, shutdown: Shutdown
    ) -> None:
        super().__init__(media_type=self.media_type)
        self.live, self.items, self.gate, self.shutdown = live, items, gate, shutdown

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        live, conn = self.live, self.live.conn
        channels = _channels(live.request)
        channels[live.channel] = live
        with self.shutdown.push():
            gone = asyncio.create_task(until_disconnected(receive, conn))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": _HEAD})
                try:
                    await live.start(self.items, self.gate.setups)
                except Exception:  # the store is away: the page polls, and reconnects
                    log.exception("could not start a live stream")
                    conn.end(at_once=False)
                await self._send_all(send)
            except TimeoutError:
                log.info("closed a live stream whose page stopped reading")
            except OSError:
                pass  # the page went away mid-write
            finally:
                gone.cancel()
                channels.pop(live.channel, None)
                await conn.aclose()
                self.gate.release(conn)

    async def _send_all(self, send: Send) -> None:
        conn = self.live.conn
        with contextlib.suppress(TimeoutError):
            while (frame := await conn.outbox.get()) is not None:
                frames = [frame]
                while len(conn.outbox) and len(frames) < _BATCH:
                    more = await conn.outbox.get()
                    if more is None:
                        break
                    frames.append(more)
                async with conn.send_bounded():
                    await send(sse_body(b"".join(frames)))
        async with asyncio.timeout(LAST_WRITE_S):
            if conn.closing is not None:
                await send(sse_body(conn.closing.comment))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
