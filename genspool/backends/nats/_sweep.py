"""The one sweep over timers of any kind (:mod:`genspool.backends.nats.timers`): fetch the
kind's messages, put back those not due, judge the due ones on their records, act on what was
found, then ack or put back each message as judged. Each call costs O(due), not O(jobs)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson
from nats.aio.msg import Msg

from genspool.backends.nats._client import Conn, ConsumerGone
from genspool.backends.nats._records import Records
from genspool.backends.nats.lanes import Verdict
from genspool.backends.nats.timers import KINDS, Judge
from genspool.core.job import Job

__all__ = ["FETCH_BATCH", "sweep"]

FETCH_BATCH = 256
#: What to do with the jobs of a message judged "take" (purge deletes them); whether it did.
Act = Callable[[Sequence[Job]], Awaitable[None]]


async def _settle(msg: Msg, verdict: Verdict) -> None:
    if verdict in ("drop", "take"):
        await msg.ack()
    else:
        await msg.nak(delay=max(float(verdict), 0.001))


async def _fetch(conn: Conn, durable: str, subject: str) -> list[Msg]:
    try:
        return await conn.fetch(conn.timer_stream, durable, FETCH_BATCH)
    except ConsumerGone:  # restarted by another process (or dropped): make it again
        await conn.add_consumer(conn.timer_stream, durable, subject)
        return await conn.fetch(conn.timer_stream, durable, FETCH_BATCH)


async def sweep(
    conn: Conn,
    records: Records,
    kind: str,
    at: float,
    judge: Judge,
    *,
    limit: float = math.inf,
    act: Act | None = None,
) -> list[Job]:
    """The jobs that ``kind``'s due timers found at time ``at`` (at least ``limit`` when there
    are that many; the caller trims)."""
    timer = KINDS[kind]
    durable, subject = conn.timer(kind)
    await conn.refresh(conn.timer_stream, durable, subject, at)
    found: list[Job] = []
    seen: set[int] = set()  # a message put back shortly may come again within this sweep
    while len(found) < limit:
        msgs = await _fetch(conn, durable, subject)
        fresh = {m.metadata.sequence.stream for m in msgs} - seen
        seen |= fresh
        due = []
        for msg in msgs:
            note = orjson.loads(msg.data)
            delay = timer.delay(note, at)
            if delay is None:
                due.append((msg, note))
            else:
                await msg.nak(delay=max(delay, 0.001))
        recs = await records.get_many(i for _, n in due for i in timer.ids(n))
        wall = time.time()
        for msg, note in due:
            verdict, jobs = judge(note, recs, at, wall - msg.metadata.timestamp.timestamp())
            if verdict == "take" and act is not None:
                await act(jobs)
            found += jobs
            await _settle(msg, verdict)
        if len(msgs) < FETCH_BATCH or not fresh:
            break
    return found
