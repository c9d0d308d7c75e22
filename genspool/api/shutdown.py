"""Clean shutdown of one app: what a first SIGINT/SIGTERM starts before the HTTP server stops.

uvicorn waits for open connections before it runs the app's lifespan shutdown, and a push
stream (Server-Sent Events or a WebSocket) never ends by itself: with one client connected,
Ctrl-C left the process up for minutes while its worker kept leasing jobs. So the command that
runs the server calls :meth:`Shutdown.begin` first: the worker stops leasing at once and drains
in the background, every push stream is told to end (a WebSocket gets a close frame 1001 with a
reason, an SSE stream a final comment line), and ``begin`` returns once they have ended, or
after ``push_grace_s``. The lifespan's own shutdown then waits for the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from starlette.requests import HTTPConnection

from genspool.core.worker import Worker

__all__ = ["CLOSE_REASON", "GOING_AWAY", "SSE_CLOSING", "Shutdown", "shutdown_of"]

log = logging.getLogger("genspool.api")

#: WebSocket close code 1001 (going away) and its reason.
GOING_AWAY = 1001
CLOSE_REASON = "genspool is shutting down; reconnect and subscribe again"
#: The last lines of an SSE stream cut short by a shutdown (a comment: clients skip it).
SSE_CLOSING = b": genspool is shutting down; reconnect for the rest of this job's events\n\n"


class Shutdown:
    """The push connections of one app, and the switch that ends them and stops its worker."""

    def __init__(self, worker: Worker | None = None, *, push_grace_s: float = 2.0) -> None:
        self.worker = worker
        self.push_grace_s = push_grace_s
        self.closing = asyncio.Event()
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def open_streams(self) -> int:
        return self._open

    @contextlib.contextmanager
    def push(self) -> Iterator[asyncio.Event]:
        """Count one push stream while it is open; yields the event that tells it to end."""
        self._open += 1
        self._idle.clear()
        try:
            yield self.closing
        finally:
            self._open -= 1
            if not self._open:
                self._idle.set()

    async def begin(self) -> None:
        """Stop leasing, tell every push stream to end, and wait (a bounded time) until they
        have. Safe to call more than once."""
        if not self.closing.is_set():
            log.info("shutting down: no new jobs leased, %d push stream(s) closing", self._open)
        if self.worker is not None:
            self.worker.stop()
        self.closing.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.push_grace_s):
                await self._idle.wait()


def shutdown_of(conn: HTTPConnection) -> Shutdown:
    """The :class:`Shutdown` of the app that received ``conn`` (a request or a WebSocket)."""
    shutdown: Shutdown = conn.app.state.shutdown
    return shutdown
