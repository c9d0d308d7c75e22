"""The API server: uvicorn's, with genspool's own signal handling (:mod:`._shutdown`).

Apart from :mod:`._shutdown` so that a worker process, which has no HTTP server, never imports
uvicorn (~70 ms of its start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import uvicorn

from genspool.api.shutdown import Shutdown
from genspool.cli._shutdown import Signals, hand_back

__all__ = ["Server"]


class Server(uvicorn.Server):
    """uvicorn's server with :class:`Signals`: the app's :class:`Shutdown` begins before the
    server waits for connections, so push streams end and the worker stops leasing at once."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown, bound_s: float) -> None:
        super().__init__(config)
        self.shutdown_app = shutdown
        self.signals = Signals(bound_s, self._begin, self._force)

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.shutdown_app.begin()
        # Open requests (a caller waiting for a job) get what is left of the bound.
        left = self.signals.bound_s - (loop.time() - started)
        self.config.timeout_graceful_shutdown = max(1, math.ceil(left))
        self.should_exit = True

    async def _force(self) -> int:
        self.force_exit = self.should_exit = True
        return await hand_back(self.shutdown_app.worker)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own handler stops the server before the app hears of it, and raises the
        # signal again at exit (a KeyboardInterrupt traceback).
        with self.signals.installed(asyncio.get_running_loop()):
            yield
