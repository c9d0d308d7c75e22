"""Push: job events over Server-Sent Events and over a WebSocket.

Both deliver one JSON event per state change (``{"id", "status", ...}``, the terminal one with
``result`` or ``error``) and, for running chat jobs, ``{"id", "status": "running", "delta"}``
token events. A subscriber that arrives after a job ended gets its final event at once.
When the server shuts down (:mod:`genspool.api.shutdown`), a WebSocket is closed with code
1001 and a reason, and an SSE stream ends with a comment line.

Every connection is bounded (:class:`~genspool.core.events.PushLimits`, from settings): its
outbox (a slow reader loses token deltas, never a terminal event, and is closed when even that
is not enough), its subscriptions, the connections of one key and of the process, its idle
time. Open connections re-read their API key every few seconds and close when it was revoked
or lost the ``read`` scope. WebSocket close codes: 1000 idle, 1001 shutting down, 1003 a binary
frame, 1008 a policy broken (key revoked, too many subscriptions, a client that does not read),
1013 too many connections (an SSE request gets 429 instead); an SSE stream that is cut short
ends with a comment saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Send
from starlette.types import Scope as AsgiScope

from genspool.api.auth import Caller, Principal, requires
from genspool.api.deps import Services, Svc
from genspool.api.shutdown import CLOSE_REASON, GOING_AWAY, SSE_CLOSING, Shutdown, shutdown_of
from genspool.core import keys as key_records
from genspool.core.events import Event, JobChanged, Outbox, PushLimits, TokenDelta
from genspool.core.job import Job
from genspool.core.keys import ApiKey, KeyStore, Scope
from genspool.core.queue import Queue
from genspool.exceptions import RateLimited

__all__ = [
    "LAST_WRITE_S",
    "SSE_HEADERS",
    "Closing",
    "Connection",
    "PushGate",
    "gate_of",
    "router",
    "sse_body",
    "until_disconnected",
]

log = logging.getLogger("genspool.api")

router = APIRouter(prefix="/v1", tags=["push"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_HEAD = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()),
]


@dataclass(frozen=True, slots=True)
class Closing:
    """Why a push connection ends: a WebSocket close code and reason (at most 123 bytes, the
    frame's limit), and the comment line an SSE stream ends with."""

    code: int
    reason: str
    sse: bytes = b""

    @property
    def comment(self) -> bytes:
        return self.sse or b": " + self.reason.encode() + b"\n\n"


SHUTDOWN = Closing(GOING_AWAY, CLOSE_REASON, SSE_CLOSING)
IDLE = Closing(1000, "idle: no job watched; reconnect when you have one")
BINARY = Closing(1003, 'binary frames are not understood; send {"subscribe": [...]} as text')
SLOW = Closing(1008, "events came faster than this client read them; reconnect")
TOO_MANY_SUBS = Closing(1008, "too many unfinished jobs watched on one connection")
REVOKED = Closing(1008, "this API key was revoked")
NO_READ = Closing(1008, "this API key no longer has the 'read' scope")
KEYS_ON = Closing(1008, "API keys are now required; reconnect with one")
TOO_MANY = 1013
#: The close frame or last comment may sit behind unread data: it gets this long, then the
#: server lets the connection go.
LAST_WRITE_S = 2.0


class Connection:
    """One open push connection: its caller, its bounded outbox, the jobs it watches and the
    tasks that feed it."""

    def __init__(self, caller: Caller, limits: PushLimits) -> None:
        self.caller, self.limits = caller, limits
        self.outbox = Outbox(limits.outbox_events, limits.outbox_bytes)
        self.live: set[str] = set()
        self.feeds: set[asyncio.Task[None]] = set()
        self.closing: Closing | None = None
        self.idle_since = time.monotonic()
        #: SSE: the stream ends once the job's events did.
        self.ends_with_feeds = False
        #: The deadline of the write in progress: ending at once cuts it short.
        self.sending: asyncio.Timeout | None = None

    def put(self, event: Event) -> None:
        if not self.outbox.put(orjson.dumps(event.public()), delta=isinstance(event, TokenDelta)):
            self.end(SLOW)

    def send_error(self, code: str, message: str) -> None:
        if not self.outbox.put(orjson.dumps({"error": {"code": code, "message": message}})):
            self.end(SLOW)

    def end(self, why: Closing | None = None, *, at_once: bool = True) -> None:
        """Close: at once (what is queued is dropped), or once what is queued was sent."""
        if not self.outbox.ended:
            self.closing = why
        self.outbox.end(at_once=at_once)
        if at_once and self.sending is not None:
            self.sending.reschedule(asyncio.get_running_loop().time())

    @contextlib.asynccontextmanager
    async def send_bounded(self) -> AsyncIterator[None]:
        """One write to the client, cut short after ``send_timeout_s`` (a client that does
        not read) or when the connection is ended at once (TimeoutError either way)."""
        try:
            async with asyncio.timeout(self.limits.send_timeout_s) as self.sending:
                yield
        except TimeoutError:
            if not self.outbox.ended:
                self.end(SLOW)
            raise
        finally:
            self.sending = None

    async def watch(self, queue: Queue, setups: asyncio.Semaphore, ids: list[str]) -> None:
        """Queue the current state of ``ids`` and keep feeding their events (in a task)."""
        self.live.update(ids)
        events = queue.subscribe(ids, tenant=self.caller.sees)
        try:
            async with setups:
                first = await anext(events)  # one event per job at least: its current state
        except BaseException:
            self.live.difference_update(ids)
            await events.aclose()
            raise
        self.put(first)
        self.follow(events, ids)

    def follow(self, events: AsyncGenerator[Event, None], ids: list[str]) -> None:
        """Feed ``events`` (of ``ids``) into the outbox, in a task, until they end."""
        self.live.update(ids)
        task = asyncio.create_task(self._feed(events, ids))
        self.feeds.add(task)
        task.add_done_callback(self.feeds.discard)

    async def _feed(self, events: AsyncGenerator[Event, None], ids: list[str]) -> None:
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    self.put(event)
                    if self.outbox.ended:
                        return
        finally:
            self.live.difference_update(ids)
            if not self.live:
                self.idle_since = time.monotonic()
                if self.ends_with_feeds:
                    self.end(at_once=False)

    async def aclose(self) -> None:
        for task in self.feeds:
            task.cancel()
        await asyncio.gather(*self.feeds, return_exceptions=True)


class PushGate:
    """The push connections of one app: admits them within the limits, ends them all when the
    server shuts down, and sweeps them every second while any is open (closing idle ones, and
    those whose key was revoked, every ``recheck_s``)."""

    def __init__(self, limits: PushLimits, keys: KeyStore, closing: asyncio.Event) -> None:
        self.limits, self.keys, self.closing = limits, keys, closing
        self.by_key: dict[str | None, set[Connection]] = {}
        self.open = 0
        #: Reading a new subscription's first state takes the store: a few at a time leave it
        #: to ordinary requests while thousands of clients subscribe at once.
        self.setups = asyncio.Semaphore(limits.setups)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeping = False
        self._task(self._shutdown())

    def admit(self, caller: Caller) -> Connection:
        """A new connection of ``caller``, or RateLimited (429) past a limit."""
        key_id = caller.key.id if caller.key else None
        mine = self.by_key.get(key_id, set())
        if self.open >= self.limits.total:
            raise _too_many(f"this server holds {self.limits.total} push connections")
        if key_id is not None and len(mine) >= self.limits.per_key:
            raise _too_many(f"this API key holds {self.limits.per_key} push connections")
        conn = Connection(caller, self.limits)
        if self.closing.is_set():
            conn.end(SHUTDOWN, at_once=False)
        self.by_key.setdefault(key_id, set()).add(conn)
        self.open += 1
        if not self._sweeping:
            self._sweeping = True
            self._task(self._sweep())
        return conn

    def release(self, conn: Connection) -> None:
        key_id = conn.caller.key.id if conn.caller.key else None
        mine = self.by_key.get(key_id, set())
        if conn in mine:
            self.open -= 1
            mine.discard(conn)
            if not mine:
                del self.by_key[key_id]

    def _each(self) -> list[Connection]:
        return [c for conns in self.by_key.values() for c in conns]

    def _task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> None:
        await self.closing.wait()
        for conn in self._each():
            conn.end(SHUTDOWN, at_once=False)

    async def _sweep(self) -> None:
        checked = time.monotonic()
        try:
            while self.open:
                await asyncio.sleep(min(1.0, self.limits.recheck_s))
                now = time.monotonic()
                for conn in self._each():
                    if not conn.live and now - conn.idle_since > self.limits.idle_s:
                        conn.end(IDLE)
                if now - checked >= self.limits.recheck_s:
                    checked = now
                    await self._recheck()
        finally:
            self._sweeping = False

    async def _recheck(self) -> None:
        for key_id in list(self.by_key):
            try:
                why = await self._verdict(key_id)
            except Exception:  # the store is away: keep serving, look again next time
                log.debug("could not re-read an API key record", exc_info=True)
                continue
            for conn in list(self.by_key.get(key_id, ())) if why else ():
                conn.end(why)

    async def _verdict(self, key_id: str | None) -> Closing | None:
        """Why the connections of ``key_id`` must close now, if they must. The record is read
        from the store, not the key cache, so that a revocation made by another process (the
        CLI) reaches them within ``recheck_s``: one read per key, however many connections."""
        if key_id is None:
            return KEYS_ON if await self.keys.enabled() else None
        raw = await self.keys.kv.kv_get(key_records.NAMESPACE, key_id)
        key = None if raw is None else ApiKey.loads(raw)
        if key is None or key.revoked:
            return REVOKED
        return None if key.allows(Scope.READ) else NO_READ


def _too_many(message: str) -> RateLimited:
    return RateLimited(f"{message}, its limit; try again later", retry_after=5)


def gate_of(conn: HTTPConnection, svc: Services) -> PushGate:
    """The :class:`PushGate` of the app that received ``conn``, made at its first use."""
    gate: PushGate | None = getattr(conn.app.state, "push_gate", None)
    if gate is None:
        gate = PushGate(svc.push, svc.keys, shutdown_of(conn).closing)
        conn.app.state.push_gate = gate
    return gate


# -- Server-Sent Events ------------------------------------------------------------------------


@router.get("/jobs/{job_id}/events", summary="Server-Sent Events of one job until it ends")
@requires(Scope.READ)
async def job_events(request: Request, svc: Svc, caller: Principal, job_id: str) -> Response:
    job = await svc.queue.get(job_id, caller.sees)  # 404 before the stream starts
    gate = gate_of(request, svc)
    return EventStream(gate, gate.admit(caller), svc.queue, job, shutdown_of(request))


class EventStream(Response):
    """The ``text/event-stream`` answer of one admitted connection. Each write is bounded by
    ``send_timeout_s``: a client that stops reading is cut off rather than held."""

    media_type = "text/event-stream"

    def __init__(
        self, gate: PushGate, conn: Connection, queue: Queue, job: Job, shutdown: Shutdown
    ) -> None:
        super().__init__(media_type=self.media_type)
        self.gate, self.conn, self.queue, self.job = gate, conn, queue, job
        self.shutdown = shutdown
        conn.ends_with_feeds = True

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        conn = self.conn
        with self.shutdown.push():
            gone = asyncio.create_task(until_disconnected(receive, conn))
            try:
                await self._stream(send)
            except TimeoutError:
                log.info("closed an event stream whose client stopped reading")
            except OSError:
                pass  # the client went away mid-write
            finally:
                gone.cancel()
                await conn.aclose()
                self.gate.release(conn)

    async def _stream(self, send: Send) -> None:
        conn = self.conn
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEAD})
        # The job was just read: its state is the first event, and the subscription starts
        # from it (no second read of the store per connection).
        conn.put(JobChanged.of(self.job))
        if self.job.terminal:
            conn.end(at_once=False)
        else:
            since = self.queue.subscribe([self.job.id], tenant=conn.caller.sees, since=[self.job])
            conn.follow(since, [self.job.id])
        with contextlib.suppress(TimeoutError):
            while (frame := await conn.outbox.get()) is not None:
                async with conn.send_bounded():
                    await send(sse_body(b"data: " + frame + b"\n\n"))
        async with asyncio.timeout(LAST_WRITE_S):
            if conn.closing is not None:
                await send(sse_body(conn.closing.comment))
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse_body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def until_disconnected(receive: Receive, conn: Connection) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    conn.end()


# -- WebSocket ---------------------------------------------------------------------------------


@router.websocket("/ws")
@requires(Scope.READ)
async def websocket(ws: WebSocket, svc: Svc, caller: Principal) -> None:
    """Send ``{"subscribe": ["<id>", ...]}`` (as often as you like); events arrive as JSON.
    Another tenant's job answers ``not_found``, like an unknown one. The API key goes in the
    ``Authorization`` header or, from a browser, in ``?token=``."""
    gate = gate_of(ws, svc)
    await ws.accept()
    try:
        conn = gate.admit(caller)
    except RateLimited as exc:
        await ws.close(TOO_MANY, exc.message[:120])
        return
    with shutdown_of(ws).push():
        sender = asyncio.create_task(_send_all(ws, conn))
        receiver = asyncio.create_task(_receive_all(ws, svc.queue, gate, conn))
        try:
            await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
            await sender  # ends once the outbox did: the receiver ended it, or someone else
        except Exception:  # the client went away mid-send
            pass
        finally:
            receiver.cancel()
            sender.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
            await conn.aclose()
            gate.release(conn)


async def _receive_all(ws: WebSocket, queue: Queue, gate: PushGate, conn: Connection) -> None:
    try:
        while not conn.outbox.ended:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return conn.end()
            text = message.get("text")
            if text is None:
                return conn.end(BINARY)
            conn.idle_since = time.monotonic()
            fresh = [i for i in dict.fromkeys(_subscription(text, conn)) if i not in conn.live]
            if len(conn.live) + len(fresh) > conn.limits.subscriptions:
                return conn.end(TOO_MANY_SUBS)
            if fresh:
                await conn.watch(queue, gate.setups, fresh)
    except Exception:
        conn.end()
        raise


def _subscription(text: str, conn: Connection) -> list[str]:
    try:
        message = orjson.loads(text)
        ids = message["subscribe"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        conn.send_error(
            "invalid_message", 'send {"subscribe": ["<job id>", ...]} as a JSON text message'
        )
        return []
    return ids


async def _send_all(ws: WebSocket, conn: Connection) -> None:
    with contextlib.suppress(TimeoutError):
        while (frame := await conn.outbox.get()) is not None:
            async with conn.send_bounded():
                await ws.send_text(frame.decode())
    if conn.closing is not None:
        async with asyncio.timeout(LAST_WRITE_S):
            await ws.close(conn.closing.code, conn.closing.reason)
