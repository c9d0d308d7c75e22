"""SIGINT and SIGTERM for ``serve``, ``api`` and ``worker``: a clean stop within a bound, or a
quick one.

The first signal stops leasing at once and lets in-flight jobs finish for up to
``GENSPOOL_DRAIN_TIMEOUT_S`` (what is left then is handed back to the queue); ``serve`` and
``api`` also close push streams and give open requests what is left of that time. The second
signal hands back what the worker holds (2 s at most) and exits at once with status 130; a third
exits without handing anything back. A watchdog ends the process ``HARD_STOP_S`` after the
bound whatever happens: a model call inside C code cannot be interrupted, and the interpreter
would wait for its thread at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genspool.core.worker import Worker

__all__ = ["EXIT_FORCED", "HARD_STOP_S", "Signals", "hand_back"]

log = logging.getLogger("genspool.cli")

EXIT_FORCED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
HARD_STOP_S = 5.0
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Signals:
    """Counts SIGINT/SIGTERM: the first runs ``begin``, the second ``force`` and exits."""

    def __init__(
        self,
        bound_s: float,
        begin: Callable[[], Awaitable[None]],
        force: Callable[[], Awaitable[int]],
    ) -> None:
        self.bound_s, self.begin, self.force = bound_s, begin, force
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def installed(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        # signal.signal rather than loop.add_signal_handler: a third Ctrl-C must work even
        # while the loop is busy.
        self._loop = loop
        originals = {sig: signal.signal(sig, self.handle) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle(self, sig: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 2 or self._loop is None:
            os._exit(EXIT_FORCED)
        if self.count == 1:
            watchdog = threading.Timer(self.bound_s + HARD_STOP_S, _hard_stop, (self.bound_s,))
            watchdog.daemon = True  # a clean exit does not wait for it
            watchdog.start()
        # The rest runs on the loop: a signal handler may interrupt any line, a print's too.
        self._loop.call_soon_threadsafe(self._first if self.count == 1 else self._second)

    def _first(self) -> None:
        log.warning(
            "stopping: no new jobs are leased; in-flight jobs get up to %.0f s "
            "(GENSPOOL_DRAIN_TIMEOUT_S), then go back to the queue. Ctrl-C again to exit now",
            self.bound_s,
        )
        self._spawn(self.begin())

    def _second(self) -> None:
        log.warning("exiting now: handing back unfinished jobs")
        self._spawn(self._force_exit())

    async def _force_exit(self) -> None:
        await self.force()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FORCED)

    def _spawn(self, step: Awaitable[None]) -> None:
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _hard_stop(bound_s: float) -> None:
    sys.stderr.write(f"genspool: not stopped {bound_s + HARD_STOP_S:.0f} s after the signal\n")
    sys.stderr.flush()
    os._exit(1)


async def hand_back(worker: Worker | None, timeout_s: float = 2.0) -> int:
    """Hand the worker's held jobs back to the queue at once (a forced exit); how many."""
    if worker is None or not worker.held:
        return 0
    held = list(worker.held.values())
    try:
        async with asyncio.timeout(timeout_s):
            released = await worker.queue.release(held)
    except Exception as exc:  # the backend is down or slow: their leases run out instead
        log.warning("could not hand back %d jobs (%s): their leases run out", len(held), exc)
        return 0
    log.warning("handed back %d unfinished jobs", len(released))
    return len(released)
