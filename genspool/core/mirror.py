"""Convergence of a separate store with the queue (``GENSPOOL_QUEUE_URL``).

The queue facade writes a change to the queue, then copies it to the store: two servers, two
writes, and a worker killed (or a server restarted) between them leaves the store behind. The
queue therefore marks every job it writes in the same atomic step (its
:class:`~genspool.core.roles.Outbox`), and :meth:`Mirror.converge`, run by ``maintain``:

* copies to the store the current record of each job marked for longer than ``GRACE_S`` (the
  copy made where the change was made has had time to land: a late copy of an older record
  would otherwise overwrite the newer one), then clears the marks still as read;
* when the queue's epoch differs from the one the store last saw (the queue's server came back
  without its data), puts the store's active jobs that the queue lacks back into it — a job
  that was running is handed back as its lease was lost with the queue — and records the epoch.

One process converges at a time (a coordination slot), so two never copy the same job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from genspool.core import machine
from genspool.core.job import Job, JobStatus
from genspool.core.machine import ACTIVE
from genspool.core.roles import JobFilter, Outbox, Storage

__all__ = ["Mirror"]

log = logging.getLogger(__name__)

#: Key-value namespace and key of the queue epoch the store has been brought up to.
_KV = ("genspool.mirror", "queue_epoch")
_LOST: dict[str, str] = {"code": "queue_lost", "message": "the queue's server lost its data"}


class Mirror:
    #: Age of a mark before maintenance copies its job (a copy in flight lands first).
    GRACE_S = 5.0
    #: Jobs per round trip, and round trips per ``converge``.
    BATCH = 1000
    ROUNDS = 10
    #: How long a converging process holds the slot if it dies while converging.
    SLOT_TTL_S = 60.0

    def __init__(self, storage: Storage, holder: str) -> None:
        self.storage, self.holder = storage, holder
        #: What the last :meth:`converge` did.
        self.last: dict[str, int] = {}

    async def converge(self, now: float) -> dict[str, int]:
        """Copy the marked jobs into the store and restore a queue that lost its data; how
        many of each (nothing when another process is converging, or marks are not kept)."""
        outbox, slots = self.storage.outbox, self.storage.coordination
        self.last = {"copied": 0, "restored": 0}
        if outbox is None:
            return self.last
        if not await slots.acquire_slot("genspool:mirror", self.holder, 1, self.SLOT_TTL_S, now):
            return self.last
        try:
            self.last["restored"] = await self._restore(outbox, now)
            self.last["copied"] = await self._copy(outbox, now - self.GRACE_S)
        finally:
            await slots.release_slot("genspool:mirror", self.holder)
        return self.last

    async def _copy(self, outbox: Outbox, before: float) -> int:
        copied = 0
        for _ in range(self.ROUNDS):
            pending = await outbox.pending(before, self.BATCH)
            if pending:
                await self.storage.store.put([job for job, _ in pending])
                await outbox.copied([(job.id, mark) for job, mark in pending])
                copied += len(pending)
            if len(pending) < self.BATCH:
                break
        return copied

    async def _restore(self, outbox: Outbox, now: float) -> int:
        epoch = (await outbox.epoch()).encode()
        kv = self.storage.kv
        if await kv.kv_get(*_KV) == epoch:
            return 0
        restored = 0
        for status in sorted(ACTIVE):
            restored += await self._restore_status(status, now)
        await kv.kv_put(*_KV, epoch)
        if restored:
            log.warning("put %d job(s) back into a queue that lost its data", restored)
        return restored

    async def _restore_status(self, status: JobStatus, now: float) -> int:
        restored, before = 0, None
        while True:
            flt = JobFilter(status=status, before=before, limit=self.BATCH)
            page = await self.storage.store.list_jobs(flt)
            if not page:
                return restored
            restored += await self._put_back(page, now)
            before = page[-1].id

    async def _put_back(self, page: Sequence[Job], now: float) -> int:
        held = {j.id for j in await self.storage.queue.get_many([j.id for j in page])}
        lost = [_handed_back(j, now) for j in page if j.id not in held]
        if lost:
            await self.storage.queue.enqueue(lost)
            await self.storage.store.put(lost)
        return len(lost)


def _handed_back(job: Job, now: float) -> Job:
    """A running job's lease was lost with the queue: it waits again, its attempt uncounted."""
    if job.status is not JobStatus.RUNNING:
        return job
    return machine.release(job, now, dict(_LOST)).job
