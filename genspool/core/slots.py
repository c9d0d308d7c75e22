"""A worker process's share of one model's ``max_concurrency``, which holds across processes.

Each batch runs under a slot held in the backend (``acquire_slot``), freed by itself when a dead
worker stops renewing it. So that a SIGKILLed worker's slots come free within seconds, a slot's
time to live is short (``SLOT_TTL_S``, whatever the job lease is) and a task of this object
renews every held slot three times per TTL; before, slots lived as long as a job lease (30 s)
and a dead worker held its model's slot for ~36 s. Taking a slot from the backend
costs a round trip, so a process keeps the slots it holds while they find work: a slot freed by
a finished batch is reused at once (most recently freed first). So that one busy process cannot
keep every slot of a model forever while another waits, a slot held for longer than ``hold_s``
is given back after its batch and this process does not take it again for ``cool_s``; another
process polling for a slot gets it in that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from genspool.core.job import now
from genspool.core.roles import Coordination

__all__ = ["SLOT_TTL_S", "Slots"]

log = logging.getLogger("genspool.slots")

#: How long a held slot lives without renewal: how soon a dead worker's slot comes free.
SLOT_TTL_S = 3.0


class Slots:
    def __init__(
        self,
        coordination: Coordination,
        model: str,
        limit: int,
        *,
        owner: str,
        ttl_s: float = SLOT_TTL_S,
        hold_s: float = 1.0,
        cool_s: float = 0.1,
    ) -> None:
        """``ttl_s`` is at most ``SLOT_TTL_S`` (a longer one, such as a job lease, is cut)."""
        self.coord, self.key, self.limit = coordination, f"model:{model}", limit
        self.ttl_s, self.hold_s, self.cool_s = min(ttl_s, SLOT_TTL_S), hold_s, cool_s
        self._renewer: asyncio.Task[None] | None = None
        self._names = [f"{owner}/{model}/{i}" for i in range(limit)]
        self._free: list[str] = []  # held and not running a batch
        self._since: dict[str, float] = {}  # held slot -> when it was taken
        self._cooling: dict[str, float] = {}  # given back -> not before (monotonic)

    async def take(self) -> str | None:
        """A slot to run one batch under, or None when the model is at its limit."""
        if self._free:
            return self._free.pop()
        t = time.monotonic()
        for name in self._names:
            if name in self._since or self._cooling.get(name, 0.0) > t:
                continue
            if not await self.coord.acquire_slot(self.key, name, self.limit, self.ttl_s, now()):
                return None
            self._since[name] = t
            self._start_renewer()
            return name
        return None

    async def put(self, slot: str, *, worked: bool) -> None:
        """Done with ``slot``: keep it for the next batch if it found work and has not been held
        for ``hold_s``; otherwise give it back."""
        since = self._since.get(slot)
        if since is None:
            return  # given back already (a drain)
        if worked and time.monotonic() - since < self.hold_s:
            self._free.append(slot)
            return
        if worked:
            self._cooling[slot] = time.monotonic() + self.cool_s
        await self.release(slot)

    async def release(self, slot: str) -> None:
        if self._since.pop(slot, None) is not None:
            if slot in self._free:
                self._free.remove(slot)
            await self.coord.release_slot(self.key, slot)

    async def renew(self) -> None:
        for slot in list(self._since):
            await self.coord.acquire_slot(self.key, slot, self.limit, self.ttl_s, now())

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_often(), name=f"renew {self.key}")

    async def _renew_often(self) -> None:
        while self._since:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self.renew()
            except Exception as exc:  # the backend is down: the slots run out, others take them
                log.warning("could not renew the slots of %s: %s", self.key, exc)

    async def release_all(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        for slot in list(self._since):
            await self.release(slot)
