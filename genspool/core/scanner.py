"""The loop every API process runs for work kept as leased records (batches, pipeline runs,
vector store files): scan the store now and then, or at once when poked, and drive what it
claimed, each record in a task of its own.

A subclass says how to :meth:`Scanner.scan` (claim records, :meth:`Scanner.drive` each). When
the loop is cancelled, so are the tasks it drives: their leases run out and a scanner elsewhere,
or this one restarted, takes the records over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any

__all__ = ["Scanner"]


class Scanner(ABC):
    #: How often the store is scanned when nothing pokes.
    SCAN_S = 1.0
    #: How many records one process drives at once.
    MAX_DRIVEN = 8
    #: What the log says this scanner looks for ("batches", "pipeline runs").
    WHAT = "work"

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._driving: dict[str, asyncio.Task[Any]] = {}
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Look for new work now (it was created or cancelled in this process)."""
        self._wake.set()

    def driving(self, key: str) -> bool:
        return key in self._driving

    @property
    def full(self) -> bool:
        return len(self._driving) >= self.MAX_DRIVEN

    @abstractmethod
    async def scan(self) -> None:
        """Claim records no one drives and :meth:`drive` each."""

    def drive(self, key: str, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` for the record ``key`` until it ends (or the loop does)."""
        task = asyncio.create_task(work, name=f"{self.WHAT} {key}")
        self._driving[key] = task
        task.add_done_callback(lambda done: self._released(key, done))

    def _released(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._driving.get(key) is task:
            del self._driving[key]
            # A slot is free: the next record waiting is claimed now, not at the next scan
            # (100 small files took 24.5 s at one scan a second with 4 slots, 2.3 s so).
            self.poke()

    async def run(self) -> None:
        """Scan and drive until cancelled."""
        try:
            while True:
                try:
                    await self.scan()
                except Exception:
                    self.log.exception("scanning for %s failed; trying again", self.WHAT)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.SCAN_S)
                self._wake.clear()
        finally:
            for task in list(self._driving.values()):
                task.cancel()
            await asyncio.gather(*self._driving.values(), return_exceptions=True)
