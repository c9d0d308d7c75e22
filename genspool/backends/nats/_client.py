"""The connection to NATS and the JetStream primitives the backend is made of: the streams,
buckets and consumers of a prefix, requests to the JetStream API, no-wait fetches from durable
pull consumers, publishes, deletes without tombstones and scans of a bucket.

The connection reconnects by itself forever with a capped, jittered exponential backoff;
subscriptions (events, wake-ups) are replayed by the client. A call made while it reconnects
waits up to ``RECONNECT_GRACE_S`` (:meth:`Conn.ready`), then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client, Server
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from genspool.backends._errors import describe, translated
from genspool.exceptions import BackendError

__all__ = ["ERRORS", "Conn", "ConsumerGone", "call", "quietly"]

log = logging.getLogger("genspool.backends.nats")

#: The driver's errors that mean the server could not be reached or used.
ERRORS: tuple[type[BaseException], ...] = (TimeoutError, nats.errors.Error, OSError)
#: How long a JetStream request may take before the call fails with BackendError.
REQUEST_TIMEOUT_S = 5.0
#: How long ``connect()`` tries before it gives up on a server that is not there.
CONNECT_BUDGET_S = 2.0
#: Reconnect backoff after the connection is lost: doubling from the base, capped, jittered.
RECONNECT_BASE_S, RECONNECT_CAP_S = 0.1, 1.0
#: How long a call made while the client reconnects waits for it before it fails.
RECONNECT_GRACE_S = 2.0
#: A message fetched but never acked (its taker died mid-call) comes back after this.
ACK_WAIT_S = 30.0
#: A caller's clock that moved ahead of real time by more than this since its last fetch from a
#: consumer (a test's clock, an NTP step) may have made due what naks hid for longer.
CLOCK_JUMP_S = 0.5
TIMER_KINDS = ("lease", "expire", "purge")


class ConsumerGone(Exception):
    """The consumer a fetch asked does not exist (deleted by ``destroy`` elsewhere, or removed
    by the server after it idled)."""


class Conn:
    """One client connection and the names of everything under ``prefix``."""

    def __init__(self, url: str, prefix: str, shown_url: str) -> None:
        self.url, self.prefix, self.shown_url = url, prefix, shown_url
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.kv: dict[str, KeyValue] = {}
        self.consumers: set[str] = set()
        self.skews: dict[str, float] = {}  # durable -> the caller's clock minus real time
        self.connected = asyncio.Event()
        p = prefix
        self.work_stream, self.timer_stream = f"{p}_work", f"{p}_timers"
        self.buckets = {
            "jobs": f"{p}_jobs",
            "idem": f"{p}_idem",
            "coord": f"{p}_coord",
            "marks": f"{p}_marks",
            "routes": f"{p}_routes",
        }
        self.events_subject, self.wake_subject = f"{p}.events", f"{p}.wake"

    def timer(self, kind: str) -> tuple[str, str]:
        """The durable consumer and the subject of a kind of timer."""
        return f"{self.prefix}_{kind}", f"{self.prefix}.timer.{kind}"

    # -- connecting --------------------------------------------------------------------------

    async def connect(self, on_wake: Callable[[Msg], Awaitable[None]]) -> None:
        if self.nc is not None and not self.nc.is_closed:
            return
        nc = await self._open()
        try:
            self.nc, self.js = nc, nc.jetstream(timeout=REQUEST_TIMEOUT_S)
            await self.create_objects()
            await nc.subscribe(self.wake_subject, cb=on_wake)
        except ERRORS as exc:
            await self.close()
            raise BackendError(
                f"NATS at {self.shown_url} has no usable JetStream (is the server run with -js?): "
                f"{describe(exc)}"
            ) from exc

    async def _open(self) -> Client:
        nc = Client()
        last: list[str] = []

        async def on_error(exc: Exception) -> None:
            last[:] = [describe(exc)]
            log.debug("NATS %s: %s", self.shown_url, exc)

        async def on_disconnect() -> None:
            self.connected.clear()
            if not nc.is_closed:  # not our own close()
                log.warning("lost the connection to NATS at %s; reconnecting", self.shown_url)

        async def on_reconnect() -> None:
            self.connected.set()
            log.info("reconnected to NATS at %s", self.shown_url)

        try:
            # The first attempt retries briefly on its own (reconnect_time_wait); once connected
            # the client reconnects forever through _backoff.
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.url],
                    name="genspool",
                    connect_timeout=1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    reconnect_to_server_handler=_backoff,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                CONNECT_BUDGET_S,
            )
        except ERRORS as exc:
            await quietly(nc.close())
            why = last[0] if last else describe(exc)
            raise BackendError(f"cannot connect to NATS at {self.shown_url}: {why}") from exc
        self.connected.set()
        return nc

    async def create_objects(self) -> None:
        js = self.jet()
        storage = api.StorageType.FILE
        for stream, subjects in ((self.work_stream, "work"), (self.timer_stream, "timer")):
            await js.add_stream(
                name=stream,
                subjects=[f"{self.prefix}.{subjects}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=storage,
            )
        for kind, bucket in self.buckets.items():
            self.kv[kind] = await js.create_key_value(bucket=bucket, history=1, storage=storage)
        for kind in TIMER_KINDS:
            await self.add_consumer(self.timer_stream, *self.timer(kind))

    async def add_consumer(
        self, stream: str, durable: str, subject: str, idle_s: float | None = None
    ) -> None:
        await self.jet().add_consumer(
            stream,
            durable_name=durable,
            filter_subject=subject,
            inactive_threshold=idle_s,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=-1,  # the facade dead-letters; a message is only ever acked away
            max_ack_pending=-1,  # delayed retries and timers wait as pending messages
        )
        self.consumers.add(durable)

    async def refresh(
        self, stream: str, durable: str, subject: str, at: float, idle_s: float | None = None
    ) -> None:
        """Start a consumer afresh when the caller's clock jumped ahead: a nak's delay is
        real time, measured against the caller's clock, so messages put back before the jump
        would stay hidden although due. A new consumer redelivers every message at once (a
        concurrent taker's acks are then lost, and the records make the redelivery harmless)."""
        skew, last = at - time.time(), self.skews.get(durable)
        self.skews[durable] = skew
        if last is None or skew - last <= CLOCK_JUMP_S or durable not in self.consumers:
            return
        log.info("clock jumped %.1f s ahead: restarting consumer %s", skew - last, durable)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.jet().delete_consumer(stream, durable)
        await self.add_consumer(stream, durable, subject, idle_s)

    async def close(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        self.connected.clear()
        self.kv.clear()
        self.consumers.clear()
        self.skews.clear()
        if nc is not None and not nc.is_closed:
            await quietly(nc.close())

    async def drop(self, *, keep: Collection[str] = ()) -> None:
        """Delete the streams and buckets of this prefix but the buckets of the kinds in
        ``keep``, leaving nothing else behind."""
        js = self.jet()
        buckets = (f"KV_{b}" for kind, b in self.buckets.items() if kind not in keep)
        for stream in (self.work_stream, self.timer_stream, *buckets):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        self.consumers.clear()

    async def ready(self, what: str) -> None:
        """While the client reconnects, give it a moment (a restarting server is back within
        it), then fail: a request sent now would only sit in the client's buffer until it
        timed out, and might still be applied later."""
        nc = self.nc
        if nc is None or nc.is_connected or nc.is_closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), RECONNECT_GRACE_S)
        if not nc.is_connected:
            raise BackendError(
                f"NATS {what} failed at {self.shown_url}: server unreachable, reconnecting"
            )

    def client(self) -> Client:
        if self.nc is None:
            raise BackendError(f"not connected to NATS at {self.shown_url}; call connect() first")
        return self.nc

    def jet(self) -> JetStreamContext:
        if self.js is None:
            raise BackendError(f"not connected to NATS at {self.shown_url}; call connect() first")
        return self.js

    def bucket(self, kind: str) -> KeyValue:
        self.jet()
        return self.kv[kind]

    # -- requests ----------------------------------------------------------------------------

    async def api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.client().request(
            f"$JS.API.{subject}", orjson.dumps(body), timeout=REQUEST_TIMEOUT_S
        )
        answer: dict[str, Any] = orjson.loads(reply.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])  # raises
        return answer

    async def publish(self, subject: str, note: dict[str, Any]) -> None:
        await self.jet().publish(subject, orjson.dumps(note))

    async def remove(self, kind: str, key: str) -> bool:
        """Delete a key outright (a stream purge leaves no tombstone); whether it existed."""
        bucket = self.buckets[kind]
        answer = await self.api(f"STREAM.PURGE.KV_{bucket}", {"filter": f"$KV.{bucket}.{key}"})
        return int(answer.get("purged", 0)) > 0

    async def scan(self, kind: str, pattern: str, *, keys_only: bool) -> list[KeyValue.Entry]:
        """Every entry of a bucket under ``pattern``: O(entries).

        nats-py's watcher may say its initial values are done before it has handled those
        already delivered (it reads the consumer's info while they are in flight, sees nothing
        pending and nothing received, and signals the end first: a scan then found no entry
        in a bucket holding some). So deletes are watched too, and the scan reads on until it
        has one message per subject the stream holds under ``pattern``."""
        bucket = self.bucket(kind)
        watcher = await bucket.watch(pattern, meta_only=keys_only)
        seen: list[KeyValue.Entry] = []
        try:
            # nats-py leaves these two unannotated
            while (entry := await watcher.updates(REQUEST_TIMEOUT_S)) is not None:  # type: ignore[no-untyped-call]
                seen.append(entry)
            expected = await self._subjects(bucket._stream, f"{bucket._pre}{pattern}")
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            while len(seen) < expected and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(nats.errors.TimeoutError):
                    if (entry := await watcher.updates(left)) is not None:  # type: ignore[no-untyped-call]
                        seen.append(entry)
        finally:
            await quietly(watcher.stop())  # type: ignore[no-untyped-call]
        return [e for e in seen if e.operation not in ("DEL", "PURGE")]

    async def _subjects(self, stream: str, subject: str) -> int:
        """How many subjects of ``stream`` match ``subject`` (each holds one last message)."""
        info = await self.api(f"STREAM.INFO.{stream}", {"subjects_filter": subject})
        return len((info.get("state") or {}).get("subjects") or {})

    async def fetch(self, stream: str, durable: str, batch: int) -> list[Msg]:
        """Up to ``batch`` messages that are deliverable now, without waiting for more."""
        nc = self.client()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[Msg] = []
        try:
            request = orjson.dumps({"batch": batch, "no_wait": True})
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", request, reply=inbox)
            while len(out) < batch:
                msg = await sub.next_msg(timeout=REQUEST_TIMEOUT_S)
                status = msg.headers.get("Status") if msg.headers else None
                if status is None:
                    out.append(msg)
                elif status in ("404", "408"):  # no (more) messages
                    break
                elif status == "503":
                    raise ConsumerGone(durable)
                else:
                    raise nats.errors.Error(f"fetch from {stream}/{durable}: status {status}")
        except nats.errors.TimeoutError:
            if not out:
                raise  # the server did not answer; what was delivered comes back after ack_wait
        finally:
            await quietly(sub.unsubscribe())
        return out


P = ParamSpec("P")
T = TypeVar("T")


class _Connected(Protocol):
    _conn: Conn


B = TypeVar("B", bound=_Connected)


def call(
    what: str,
) -> Callable[
    [Callable[Concatenate[B, P], Awaitable[T]]], Callable[Concatenate[B, P], Coroutine[Any, Any, T]]
]:
    """A public method of an object over a :class:`Conn`: wait out a reconnect, then
    translate the driver's errors."""

    def wrap(
        fn: Callable[Concatenate[B, P], Awaitable[T]],
    ) -> Callable[Concatenate[B, P], Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def checked(self: B, /, *args: P.args, **kwargs: P.kwargs) -> T:
            await self._conn.ready(what)
            return await fn(self, *args, **kwargs)

        return translated(what, ERRORS)(checked)

    return wrap


def _backoff(servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
    """Reconnect delay: doubling from RECONNECT_BASE_S up to RECONNECT_CAP_S, full jitter."""
    server = min(servers, key=lambda s: s.reconnects)
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(server.reconnects, 10))
    return server, random.uniform(ceiling / 2, ceiling)


async def quietly(step: Awaitable[Any]) -> None:
    """Run a clean-up step whose failure changes nothing (the connection is going anyway)."""
    try:
        await step
    except Exception as exc:
        log.debug("ignored during clean-up: %s", exc)
