"""The outbox of a NATS queue with a separate store (:class:`genspool.core.roles.Outbox`): marks
of the jobs whose copy in the store may be behind, in the bucket ``<prefix>_marks``.

NATS cannot write two keys in one step, so a mark is written *before* the queue write it
stands for (as the notices are, :mod:`._records`): a process killed between the two leaves a
mark on a record that did not change, which costs one needless copy. A mark is the key of its
job with no value; its time is the server's stamp on the message (the one clock of
maintenance, whatever the marking process's own says), and it is cleared by a stream purge
bounded by the revision that was read, so a job marked again meanwhile keeps its newer mark.

``purge`` keeps marked jobs (:meth:`Marks.held`); the epoch is a key of ``<prefix>_coord``,
made by the first :meth:`Marks.epoch` (a server that lost its data has none, so the next one
names a new one), and marking starts in a process when it calls ``epoch``.

**Limit.** A write that reaches the server more than the mirror's grace after its mark (a
request left in the client's buffer across a reconnect and sent after its call gave up) may
land after maintenance cleared that mark; the store then lags until the job is written again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence

from genspool.backends.nats._client import Conn
from genspool.backends.nats._records import Conflict

__all__ = ["Marks"]

_EPOCH = "epoch"
#: Marks read and not cleared yet that a process remembers at most.
_REMEMBERED = 100_000


class Marks:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.marking = False
        #: (job id, mark) -> the revision ``pending`` read it at, for ``copied``.
        self._read: dict[tuple[str, float], int] = {}

    async def mark(self, job_ids: Iterable[str]) -> None:
        """Mark jobs about to be written (nothing before ``epoch`` was called here)."""
        if self.marking:
            kv = self.conn.bucket("marks")
            await asyncio.gather(*(kv.put(i, b"") for i in dict.fromkeys(job_ids)))

    async def epoch(self) -> str:
        coord = self.conn.bucket("coord")
        fresh = uuid.uuid4().hex
        try:
            await coord.create(_EPOCH, fresh.encode())
            epoch = fresh
        except Conflict:
            entry = await coord.get(_EPOCH)
            epoch = (entry.value or b"").decode()
        self.marking = True
        return epoch

    async def _all(self) -> list[tuple[str, float, int]]:
        """Every mark: (job id, server time of the mark, revision)."""
        entries = await self.conn.scan("marks", ">", keys_only=True)
        return [
            (e.key, e.created.timestamp(), e.revision)  # type: ignore[attr-defined]
            for e in entries
            if e.created is not None and e.revision is not None
        ]

    async def held(self) -> set[str]:
        """The marked jobs' ids (``purge`` keeps them)."""
        return {job_id for job_id, _, _ in await self._all()}

    async def older(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` marks older than ``before``, oldest first (remembered for
        :meth:`cleared`)."""
        due = sorted((at, i, rev) for i, at, rev in await self._all() if at < before)[:limit]
        if len(self._read) > _REMEMBERED:  # marks read but never copied (the store was down)
            self._read.clear()
        self._read.update(((i, at), rev) for at, i, rev in due)
        return [(i, at) for at, i, _ in due]

    async def cleared(self, marks: Sequence[tuple[str, float]]) -> None:
        """Clear the marks still at the revision :meth:`older` read them at; a mark this process
        did not read stays (a later round clears it)."""
        bucket = self.conn.buckets["marks"]
        todo = [(i, self._read.pop((i, at))) for i, at in marks if (i, at) in self._read]
        await asyncio.gather(
            *(
                self.conn.api(
                    f"STREAM.PURGE.KV_{bucket}", {"filter": f"$KV.{bucket}.{i}", "seq": rev + 1}
                )
                for i, rev in todo
            )
        )

    async def forget(self, job_ids: Sequence[str]) -> None:
        """Clear the marks :meth:`older` read of jobs that no longer exist."""
        gone = set(job_ids)
        await self.cleared([key for key in self._read if key[0] in gone])
