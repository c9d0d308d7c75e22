"""Job records in the ``<prefix>_jobs`` bucket: reads, the compare-and-set every change goes
through, and the notices (work messages, timers) a new state needs.

**The record is the truth**, and every change of it is a compare-and-set on its revision
(``kv.update(key, value, last=revision)``), re-read and re-decided on a conflict: that is what
fences a stale worker (the decision checks the lease token on the revision that is then
replaced).

**Notices before writes.** A notice that makes a job findable in its new state (a work
message, a timer) is published *before* the write and carries the revision that write
replaces. A reader that finds the record still at that revision (or, for a new job, not there
yet) knows the write is in flight and looks again shortly; past a grace period it drops the
notice (:func:`genspool.backends.nats.lanes.inflight`). So a process that dies between the two
steps leaves no job that nothing will ever look at, and a duplicate notice is harmless because
the record decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import nats.js.errors

from genspool.backends.nats._client import Conn
from genspool.backends.nats._codec import Rec, decode, encode, idem_key, work_subject
from genspool.core.job import WAITING, Job, JobStatus
from genspool.core.machine import ACTIVE, PURGEABLE
from genspool.exceptions import BackendError

__all__ = ["CAS_TRIES", "Conflict", "Decide", "Records"]

Conflict = nats.js.errors.KeyWrongLastSequenceError
#: Compare-and-set attempts before a change gives up (only under heavy write contention).
CAS_TRIES = 16
#: The job as it must become, or None when the stored one no longer qualifies.
Decide = Callable[[Job], Job | None]


class Records:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def get(self, job_id: str) -> Rec | None:
        try:
            entry = await self.conn.bucket("jobs").get(job_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        assert entry.value is not None and entry.revision is not None
        return Rec(decode(entry.value), entry.revision)

    async def get_many(self, job_ids: Iterable[str]) -> dict[str, Rec]:
        ids = list(dict.fromkeys(job_ids))
        found = await asyncio.gather(*(self.get(i) for i in ids))
        return {i: r for i, r in zip(ids, found, strict=True) if r is not None}

    async def transition(self, rec: Rec, decide: Decide) -> tuple[bool, Rec | None]:
        """Compare-and-set ``decide(job)`` onto the record, re-reading it on a conflict.
        Returns whether it was written and the latest record seen (None: the job is gone)."""
        current: Rec | None = rec
        for _ in range(CAS_TRIES):
            assert current is not None
            before = current.job.status
            new = decide(current.job)
            if new is None:
                return False, current
            await self.announce(new, before, current.rev)
            try:
                rev = await self.conn.bucket("jobs").update(new.id, encode(new), last=current.rev)
                return True, Rec(new, rev)
            except Conflict:
                current = await self.get(rec.job.id)
                if current is None:
                    return False, None
        raise BackendError(f"job {rec.job.id} kept changing under {CAS_TRIES} writes; try again")

    def notices(self, job: Job, before: JobStatus | None, superseded: int) -> list[Any]:
        """What makes ``job`` findable in its new state (``before``: its stored status, None
        for a new record): a work message while it waits, its expiry timer again when it
        comes back from an ended state (or is new), a purge timer when it ended purgeable."""
        conn, note = self.conn, {"id": job.id, "r": superseded}
        out = []
        if job.status in WAITING:
            out.append(conn.publish(work_subject(conn.prefix, job), {**note, "k": job.rank}))
            if job.expires_at is not None and (before is None or before not in ACTIVE):
                out.append(conn.publish(conn.timer("expire")[1], {**note, "e": job.expires_at}))
        elif job.status in PURGEABLE:
            finished = job.finished_at if job.finished_at is not None else time.time()
            out.append(conn.publish(conn.timer("purge")[1], {**note, "f": finished}))
        return out

    async def announce(self, job: Job, before: JobStatus | None, superseded: int) -> None:
        """Publish the notices of ``job``'s new state, before the write itself."""
        await asyncio.gather(*self.notices(job, before, superseded))

    async def put(self, jobs: Sequence[Job]) -> None:
        """Upsert whole records (a mirror of another queue). The notices follow the writes
        with revision 0 (never a stored one), so a reader takes them as landed."""
        kv, idem = self.conn.bucket("jobs"), self.conn.bucket("idem")
        await asyncio.gather(*(kv.put(j.id, encode(j)) for j in jobs))
        keyed = [j for j in jobs if j.idempotency_key is not None]
        await asyncio.gather(
            *(idem.put(idem_key(j.tenant, j.idempotency_key or ""), j.id.encode()) for j in keyed)
        )
        await asyncio.gather(*(n for j in jobs for n in self.notices(j, None, 0)))

    async def delete(self, job: Job) -> bool:
        """Delete an ended job's record and idempotency key. An ended job never changes
        again, so this needs no compare-and-set."""
        removed = await self.conn.remove("jobs", job.id)
        if job.idempotency_key is not None:
            await self.conn.remove("idem", idem_key(job.tenant, job.idempotency_key))
        return removed
