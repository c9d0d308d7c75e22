"""Events and work wake-ups of the PostgreSQL backend, over LISTEN/NOTIFY.

Two channels are named after the schema: ``<schema>:events`` carries broadcasts,
``<schema>:work`` carries ``"<earliest available_at> <model>"`` after a write made jobs ready.
:class:`Listener` holds one dedicated connection (outside the pool) listening to both, and
reconnects by itself with a capped, jittered backoff. A broadcast over :data:`INLINE_MAX` bytes
(NOTIFY carries at most 8000) is stored in ``events`` and only its id is notified.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import psycopg
from psycopg import Notify, sql

from genspool.backends._errors import describe
from genspool.backends.postgres._pool import Conn, Connections, Q

__all__ = ["EVENTS_KEEP_S", "Listener", "inline"]

log = logging.getLogger("genspool.backends.postgres")

#: Largest broadcast sent inside the NOTIFY itself (the server refuses payloads of 8000 bytes).
INLINE_MAX = 7000
#: How long a stored broadcast is kept for listeners to read it.
EVENTS_KEEP_S = 300.0
#: A listening connection that received nothing for this long is pinged.
PING_S = 10.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0


def inline(payload: bytes) -> str | None:
    """``payload`` as NOTIFY text, or None when it must go through the ``events`` table."""
    if len(payload) > INLINE_MAX:
        return None
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


class Listener:
    """The LISTEN connection of one backend: hands broadcasts to ``delivers`` and sets the
    per-model ``wakeups`` events (now, or when a notified retry backoff ends)."""

    def __init__(self, connections: Connections, wakeups: defaultdict[str, asyncio.Event]) -> None:
        self._connections = connections
        self.events_channel = f"{connections.schema}:events"
        self.work_channel = f"{connections.schema}:work"
        self.delivers: list[Callable[[bytes], None]] = []
        self.listening = asyncio.Event()
        self._wakeups = wakeups
        self._task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen_forever(), name="genspool-pg-listen")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.listening = asyncio.Event()  # it belongs to the loop that waited on it

    async def wake_others(self, conn: Conn, ready: Sequence[tuple[str, float]]) -> None:
        """Tell other processes' idle workers that jobs of these models are ready (or will be at
        the given time). Sent after the write committed, so a woken worker finds the rows; best
        effort, since the write stands anyway and idle workers also poll."""
        earliest: dict[str, float] = {}
        for model, at in ready:
            earliest[model] = min(at, earliest.get(model, at))
        if not earliest:
            return
        payloads = [f"{at!r} {model}" for model, at in earliest.items()]
        try:
            await conn.execute(Q["wake"], {"work": self.work_channel, "payloads": payloads})
        except psycopg.Error as exc:
            shown = self._connections.shown
            log.warning("could not wake other workers on %s: %s", shown, describe(exc))

    async def _listen_forever(self) -> None:
        """Hold one LISTEN connection for events and wake-ups; reconnect when it is lost."""
        backoff, failures = BACKOFF_MIN_S, 0
        while True:
            try:
                async with await self._connections.direct() as conn:
                    await self._listen_on(conn)
            except Exception as exc:  # the server went away, or a bug: keep listening anyway
                # One warning per outage, not one per attempt while the server is down.
                up = failures == 0 or self.listening.is_set()
                log.log(
                    logging.WARNING if up else logging.DEBUG,
                    "LISTEN on %s failed: %s; reconnecting",
                    self._connections.shown,
                    describe(exc),
                )
            if self.listening.is_set():  # it was up: start the backoff over
                backoff, failures = BACKOFF_MIN_S, 0
            self.listening.clear()
            failures += 1
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _listen_on(self, conn: Conn) -> None:
        channels = [sql.Identifier(self.events_channel), sql.Identifier(self.work_channel)]
        await conn.execute(sql.SQL("LISTEN {}; LISTEN {}").format(*channels))
        self.listening.set()
        log.debug("listening for events and work on %s", self._connections.shown)
        for event in self._wakeups.values():  # work may have come while nobody listened
            event.set()
        while True:
            async for note in conn.notifies(timeout=PING_S):
                await self._dispatch(note)
            await conn.execute("SELECT 1")  # quiet for a while: is the server still there?

    async def _dispatch(self, note: Notify) -> None:
        if note.channel == self.work_channel:
            self._wake(note.payload)
            return
        payload = await self._payload(note.payload)
        if payload is None:
            return
        for deliver in list(self.delivers):
            try:
                deliver(payload)
            except Exception:
                log.exception("an event listener failed")

    async def _payload(self, text: str) -> bytes | None:
        if text.startswith("="):
            return text[1:].encode()
        # "#<id>": the payload was too large for NOTIFY and waits in the events table.
        try:
            found = await self._connections.fetch(Q["event_get"], {"id": int(text[1:])})
        except (psycopg.Error, ValueError) as exc:
            log.warning("could not read broadcast %s: %s", text, describe(exc))
            return None
        return bytes(found[0][0]) if found else None

    def _wake(self, payload: str) -> None:
        """Wake the lanes of a model now, or when the earliest notified job becomes ready."""
        at, _, model = payload.partition(" ")
        try:
            delay = float(at) - time.time()
        except ValueError:
            delay = 0.0
        event = self._wakeups[model]
        if delay <= 0.0:
            event.set()
            return
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if t.when() > loop.time()]
        self._timers.append(loop.call_later(delay, event.set))
