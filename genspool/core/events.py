"""Job events: their types, their one codec, and the in-process publish/subscribe hub.

Three kinds of event reach subscribers: :class:`JobChanged` (a job entered a state; the terminal
one carries the result or error), :class:`TokenDelta` (text a running chat job generated) and
:class:`JobProgress` (a step of a running job ended: a fan-out's branch, an agent's tool call).
Between processes the relay (:mod:`genspool.core.relay`) also sends announcements:
:class:`Watching` (a subscriber here listens to these jobs: send their token deltas) and
:class:`Hello` (a process joined: announce again). :func:`encode` and :func:`decode` are the
one wire format for all five. Subscribers listen to a set of job ids, or to all jobs with
``None``; the hub fans out inside one process without ever blocking the publisher.

An :class:`Outbox` holds what one push connection (WebSocket, SSE) has yet to send, bounded
by :class:`PushLimits`: a client that does not read costs the server a bounded amount.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from genspool.core.job import TERMINAL, Job

__all__ = [
    "Event",
    "EventHub",
    "Hello",
    "JobChanged",
    "JobProgress",
    "Message",
    "Outbox",
    "PushLimits",
    "Subscription",
    "TokenDelta",
    "Watching",
    "decode",
    "encode",
]

_ALL = "*"
NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job is now in ``status`` (or ``not_found``: it does not exist for this subscriber)."""

    id: str
    status: str
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def of(cls, job: Job) -> JobChanged:
        return cls(job.id, job.status.value, job.attempts, job.result, job.error)

    @classmethod
    def not_found(cls, job_id: str) -> JobChanged:
        return cls(job_id, NOT_FOUND, error={"code": NOT_FOUND, "message": f"no job {job_id!r}"})

    @property
    def ends(self) -> bool:
        """Whether this is the last event of its job."""
        return self.status in TERMINAL or self.status == NOT_FOUND

    def public(self) -> dict[str, Any]:
        """The event as clients receive it (WebSocket, SSE)."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "attempts": self.attempts}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Text that a running job generated since the last delta."""

    id: str
    delta: str
    status: str = "running"
    ends = False

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A part of a running job ended: ``kind`` says which (``branch`` of a fan-out, ``step`` of
    an agent), ``data`` is its public record. Unlike token deltas, progress goes to every
    process and is never dropped for a slow reader: a client renders branches from it."""

    id: str
    kind: str
    data: dict[str, Any]
    status: str = "running"
    ends = False

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, self.kind: self.data}


@dataclass(frozen=True, slots=True)
class Watching:
    """A subscriber in the sending process listens to these jobs (``None``: to all)."""

    ids: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Hello:
    """The sending process just joined and wants every process to announce what it watches."""

    origin: str


Event = JobChanged | TokenDelta | JobProgress
Message = JobChanged | TokenDelta | JobProgress | Watching | Hello


def _to_wire(m: Message) -> dict[str, Any]:
    if isinstance(m, JobChanged):
        out = {"t": "job", "id": m.id, "status": m.status, "attempts": m.attempts}
        if m.result is not None:
            out["result"] = m.result
        if m.error is not None:
            out["error"] = m.error
        return out
    if isinstance(m, TokenDelta):
        return {"t": "delta", "id": m.id, "delta": m.delta}
    if isinstance(m, JobProgress):
        return {"t": "progress", "id": m.id, "kind": m.kind, "data": m.data}
    if isinstance(m, Watching):
        return {"t": "watch", "ids": None if m.ids is None else list(m.ids)}
    return {"t": "hello", "origin": m.origin}


def _from_wire(d: dict[str, Any]) -> Message | None:
    kind = d.get("t")
    if kind == "job":
        return JobChanged(d["id"], d["status"], d["attempts"], d.get("result"), d.get("error"))
    if kind == "delta":
        return TokenDelta(d["id"], d["delta"])
    if kind == "progress":
        return JobProgress(d["id"], d["kind"], d["data"])
    if kind == "watch":
        return Watching(None if d["ids"] is None else tuple(d["ids"]))
    if kind == "hello":
        return Hello(d["origin"])
    return None


def encode(origin: str, messages: Sequence[Message]) -> bytes:
    """``<origin> <JSON list>``: the origin first, so a process skips its own without parsing."""
    return origin.encode() + b" " + orjson.dumps([_to_wire(m) for m in messages])


def decode(payload: bytes) -> tuple[str, list[Message]]:
    """The origin and messages of a payload; ValueError when it is not one of ours."""
    origin, _, body = payload.partition(b" ")
    try:
        raw = orjson.loads(body)
        found = [_from_wire(d) for d in raw]
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError("not a genspool event batch") from exc
    return origin.decode(errors="replace"), [m for m in found if m is not None]


class Subscription:
    """A queue of events for some job ids; ``add`` widens it while it is open. One opened
    with ``deltas=False`` wants the jobs' states only, so it makes no worker stream tokens."""

    def __init__(
        self, hub: EventHub, ids: Iterable[str] | None, maxsize: int, *, deltas: bool = True
    ) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.keys: set[str] = set(ids) if ids is not None else {_ALL}
        self.deltas = deltas
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
        if not self.deltas and isinstance(event, TokenDelta):
            return
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
    """Subscriptions by job id, and the fan-out of each event to them: at most ``step``
    deliveries per turn of the event loop, the rest on the next turns, in order. Delivering an
    event to 2,000 SSE clients of one job at once woke 2,000 tasks in one turn and held an
    unrelated GET for ~650 ms."""

    def __init__(self, maxsize: int = 10_000, *, step: int = 256) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._maxsize = maxsize
        self._step = step
        self._pending: deque[tuple[Event, tuple[Subscription, ...], int]] = deque()
        self._used = 0  # deliveries made in this turn of the event loop
        self._turn_scheduled = False

    def subscribe(self, ids: Iterable[str] | None = None, *, deltas: bool = True) -> Subscription:
        sub = Subscription(self, ids, self._maxsize, deltas=deltas)
        for key in sub.keys:
            self._subs[key].add(sub)
        return sub

    def wants(self, job_id: str) -> bool:
        """Whether anyone listens to this job's token deltas now (cheap; any thread)."""
        if not self._subs:
            return False
        for key in (job_id, _ALL):
            subs = self._subs.get(key)
            if subs and any(s.deltas for s in list(subs)):
                return True
        return False

    def publish(self, event: Event) -> None:
        if not self._subs:
            return
        subs = (*self._subs.get(event.id, ()), *self._subs.get(_ALL, ()))
        if subs:
            self._pending.append((event, subs, 0))
            if len(self._pending) == 1:  # else the ones before wait for the next turn
                self._deliver()

    def _deliver(self) -> None:
        """Deliver pending events in order, ``step`` deliveries a turn of the event loop."""
        budget = self._step - self._used
        while self._pending and budget > 0:
            event, subs, at = self._pending[0]
            end = min(len(subs), at + budget)
            for sub in subs[at:end]:
                sub.put(event)
            budget -= end - at
            if end == len(subs):
                self._pending.popleft()
            else:
                self._pending[0] = (event, subs, end)
        self._used = self._step - budget
        if self._turn_scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self._turn)
            self._turn_scheduled = True
        except RuntimeError:  # no loop (a synchronous caller): deliver the rest now
            pending, self._pending, self._used = self._pending, deque(), 0
            for event, subs, at in pending:
                for sub in subs[at:]:
                    sub.put(event)

    def _turn(self) -> None:
        self._turn_scheduled, self._used = False, 0
        if self._pending:
            self._deliver()

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


@dataclass(frozen=True, slots=True)
class PushLimits:
    """The bounds of push connections (WebSocket and SSE); the reasons for each default are in
    :class:`genspool.settings.Settings`."""

    outbox_bytes: int = 256 * 1024
    outbox_events: int = 1_000
    subscriptions: int = 1_000
    per_key: int = 256
    total: int = 2_048
    send_timeout_s: float = 30.0
    idle_s: float = 60.0
    recheck_s: float = 2.0
    setups: int = 4


class Outbox:
    """Frames one connection has yet to send, at most ``max_events`` of them and ``max_bytes``.

    A token delta that does not fit is dropped: the job's terminal event carries the whole text.
    A state event that does not fit first evicts the queued deltas, and when it still does not
    fit the outbox overflows (:meth:`put` answers False): the client cannot keep up and its
    connection must close. A lone frame always fits, however large, so that a terminal event is
    never lost while the connection lives.
    """

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self._frames: deque[tuple[bytes, bool]] = deque()
        self.bytes = 0
        self.dropped = 0
        self._ready = asyncio.Event()
        self._ended = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, frame: bytes, *, delta: bool = False) -> bool:
        """Queue ``frame``; False when it cannot fit even without the queued deltas."""
        if self._ended:
            return True
        if not self._fits(len(frame)):
            if delta:
                self.dropped += 1
                return True
            self._evict_deltas()
            if not self._fits(len(frame)):
                return False
        self._frames.append((frame, delta))
        self.bytes += len(frame)
        self._ready.set()
        return True

    def end(self, *, at_once: bool = False) -> None:
        """No more frames: :meth:`get` answers None after the queued ones (or now)."""
        self._ended = True
        if at_once:
            self._frames.clear()
            self.bytes = 0
        self._ready.set()

    async def get(self) -> bytes | None:
        """The next frame to send; None once the outbox has ended and is empty."""
        while not self._frames:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame, _ = self._frames.popleft()
        self.bytes -= len(frame)
        return frame

    def _fits(self, size: int) -> bool:
        if not self._frames:
            return True
        return len(self._frames) < self.max_events and self.bytes + size <= self.max_bytes

    def _evict_deltas(self) -> None:
        kept = deque(f for f in self._frames if not f[1])
        self.dropped += len(self._frames) - len(kept)
        self._frames = kept
        self.bytes = sum(len(f[0]) for f in kept)
