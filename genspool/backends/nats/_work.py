"""Submitting and leasing on NATS: idempotency claims, new records with their work messages,
and the lease over a model's lanes (its pure decisions are in
:mod:`genspool.backends.nats.lanes`).

A lease asks the work stream which lanes of the model hold messages (one stream-info
request), reads the rank at the head of each lane when there are several (one direct read per
lane, in parallel), fetches each lane's share (``no_wait``, in parallel), reads the records,
publishes one lease timer, marks the ready jobs (the outbox of a split deployment), moves them
to ``running`` by compare-and-set and acks their messages. A message whose job is not waiting
any more (cancelled, leased through a duplicate, ended) is acked away; one whose retry is not
due yet is nak'd with the remaining delay.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Callable, Sequence

import nats.js.errors
import orjson
from nats.aio.msg import Msg

from genspool.backends.nats import lanes
from genspool.backends.nats._client import Conn, ConsumerGone
from genspool.backends.nats._codec import Rec, decode, encode, idem_key, name_token
from genspool.backends.nats._marks import Marks
from genspool.backends.nats._records import Conflict, Records
from genspool.backends.nats.lanes import INFLIGHT_RETRY_S, Lane, Verdict
from genspool.core.job import Job, JobStatus
from genspool.core.machine import LeaseSpec, leased
from genspool.exceptions import BackendError

__all__ = ["Work"]

#: How long an idempotent submit waits for the record of a key claimed by another call.
IDEM_WAIT_S = 2.0
#: Fetch rounds in one lease call when fetched messages turned out stale.
FETCH_ROUNDS = 4
#: A tenant's work consumer that no lease used for this long is removed by the server.
LANE_IDLE_S = 3600.0


def _age(msg: Msg) -> float:
    return time.time() - msg.metadata.timestamp.timestamp()


class Work:
    def __init__(
        self,
        conn: Conn,
        records: Records,
        marks: Marks,
        wake_later: Callable[[str, float], None],
    ) -> None:
        self.conn, self.records, self.marks, self.wake_later = conn, records, marks, wake_later

    # -- submitting --------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> tuple[list[Job], list[Job]]:
        """The jobs as the caller gets them back, and the new ones among them."""
        firsts: dict[tuple[str, str], int] = {}
        alias: dict[int, int] = {}
        for i, job in enumerate(jobs):
            if job.idempotency_key is not None:
                alias[i] = firsts.setdefault((job.tenant, job.idempotency_key), i)
        claimed = await asyncio.gather(*(self._claim_key(jobs[i]) for i in firsts.values()))
        existing = {i: found for i, found in zip(firsts.values(), claimed, strict=True) if found}
        new = [
            j for i, j in enumerate(jobs) if i not in alias or (alias[i] == i and i not in existing)
        ]
        stored = await self._insert(new)
        out: list[Job] = []
        for i, job in enumerate(jobs):
            first = alias.get(i, i)
            if first in existing:
                out.append(existing[first])
            elif first == i:
                out.append(job)
            else:
                out.append(decode(encode(stored[jobs[first].id])))
        return out, new

    async def _insert(self, jobs: Sequence[Job]) -> dict[str, Job]:
        """Publish the work messages (and expiry timers), then create the records."""
        records = {
            j.id: dataclasses.replace(
                j,
                status=JobStatus.QUEUED,
                attempts=0,
                available_at=j.available_at or j.created_at,
                started_at=None,
                retried_at=None,
                finished_at=None,
                lease_token=None,
                lease_expires_at=None,
                result=None,
                error=None,
            )
            for j in jobs
        }
        await self.marks.mark(records)
        await asyncio.gather(
            *(n for j in records.values() for n in self.records.notices(j, None, 0))
        )
        kv = self.conn.bucket("jobs")
        try:
            await asyncio.gather(*(kv.create(i, encode(j)) for i, j in records.items()))
        except Conflict as exc:
            raise BackendError("a job with one of these ids exists already") from exc
        return records

    async def _claim_key(self, job: Job) -> Job | None:
        """Claim the job's idempotency key; the job stored under it when it was taken. A claim
        whose record never appeared (its process died) is taken over after IDEM_WAIT_S."""
        assert job.idempotency_key is not None
        key = idem_key(job.tenant, job.idempotency_key)
        idem = self.conn.bucket("idem")
        try:
            await idem.create(key, job.id.encode())
            return None
        except Conflict:
            pass
        deadline = time.monotonic() + IDEM_WAIT_S
        while True:
            try:
                entry = await idem.get(key)
            except nats.js.errors.KeyNotFoundError:  # purged meanwhile: claim it afresh
                return await self._claim_key(job)
            assert entry.value is not None and entry.revision is not None
            rec = await self.records.get(entry.value.decode())
            if rec is not None:
                return rec.job
            if time.monotonic() > deadline:  # its submitter died before storing the job
                try:
                    await idem.update(key, job.id.encode(), last=entry.revision)
                    return None
                except Conflict:
                    deadline = time.monotonic() + IDEM_WAIT_S
            await asyncio.sleep(INFLIGHT_RETRY_S)

    # -- leasing -----------------------------------------------------------------------------

    async def lease(self, spec: LeaseSpec) -> list[Job]:
        model_token = name_token(spec.model)
        out: list[Job] = []
        for _ in range(FETCH_ROUNDS):  # more rounds only when fetched messages were stale
            want = spec.limit - len(out)
            shares = await self._plan(model_token, want)
            fetched = await asyncio.gather(
                *(self._fetch_lane(ln, n, spec.now) for ln, n in shares.items())
            )
            msgs = [m for batch in fetched for m in batch]
            out += await self._take(msgs, spec)
            if len(out) >= spec.limit or len(msgs) < want:
                break
        out.sort(key=lambda j: (-j.priority, j.rank, j.available_at))
        return out

    async def _plan(self, model_token: str, want: int) -> dict[Lane, int]:
        pattern = f"{self.conn.prefix}.work.{model_token}.*.*"
        info = await self.conn.jet().stream_info(self.conn.work_stream, subjects_filter=pattern)
        contenders = lanes.contenders(info.state.subjects or {}, want)
        heads: list[float | None] = []
        if len(contenders) > 1:
            heads = await asyncio.gather(*(self._head_rank(ln.subject) for ln in contenders))
        return lanes.shares(contenders, dict(zip(contenders, heads, strict=False)), want)

    async def _head_rank(self, subject: str) -> float | None:
        """The rank carried by the oldest message of a lane (None when it is empty now)."""
        try:
            answer = await self.conn.api(
                f"STREAM.MSG.GET.{self.conn.work_stream}", {"next_by_subj": subject, "seq": 1}
            )
        except nats.js.errors.NotFoundError:
            return None
        note = orjson.loads(base64.b64decode(answer["message"]["data"]))
        return float(note["k"])

    async def _fetch_lane(self, lane: Lane, batch: int, now: float) -> list[Msg]:
        durable = lane.subject.replace(".", "_")
        conn = self.conn
        await conn.refresh(conn.work_stream, durable, lane.subject, now, LANE_IDLE_S)
        for _ in range(2):
            if durable not in conn.consumers:
                # A tenant's lane lives while it is used; the server drops it when idle and
                # the next lease makes it again (its messages stay in the stream meanwhile).
                await conn.add_consumer(conn.work_stream, durable, lane.subject, LANE_IDLE_S)
            try:
                return await conn.fetch(conn.work_stream, durable, batch)
            except ConsumerGone:
                conn.consumers.discard(durable)
        return []

    async def _take(self, msgs: Sequence[Msg], spec: LeaseSpec) -> list[Job]:
        """Lease the jobs of fetched work messages that are ready; dispose of the others."""
        notes = [(m, orjson.loads(m.data)) for m in msgs]
        recs = await self.records.get_many(n["id"] for _, n in notes)
        ready: dict[str, list[Msg]] = {}
        for msg, note in notes:
            verdict = self._verdict(recs.get(note["id"]), note, msg, spec)
            if verdict == "take":
                ready.setdefault(note["id"], []).append(msg)
            else:
                await self._dispose(msg, verdict, spec.model)
        if not ready:
            return []
        # The lease timer goes out before the records change, so no lease is left unwatched.
        note = {"t": spec.token, "u": spec.until, "ids": list(ready)}
        await self.conn.publish(self.conn.timer("lease")[1], note)
        await self.marks.mark(ready)

        def decide(job: Job) -> Job | None:
            return leased(job, spec) if lanes.ready(job, spec.now, spec.waiting) else None

        results = await asyncio.gather(*(self.records.transition(recs[i], decide) for i in ready))
        out = []
        for group, (applied, latest) in zip(ready.values(), results, strict=True):
            if applied:
                assert latest is not None
                out.append(latest.job)
                for msg in group:
                    await msg.ack()
                continue
            for msg in group:
                note = orjson.loads(msg.data)
                await self._dispose(msg, self._verdict(latest, note, msg, spec), spec.model)
        return out

    @staticmethod
    def _verdict(rec: Rec | None, note: dict[str, float], msg: Msg, spec: LeaseSpec) -> Verdict:
        return lanes.work_verdict(rec, int(note["r"]), _age(msg), spec.now, spec.waiting)

    async def _dispose(self, msg: Msg, verdict: Verdict, model: str) -> None:
        if verdict == "drop":
            await msg.ack()
            return
        # "take" here means the job became ready again after a lost race: look again soon.
        delay = max(INFLIGHT_RETRY_S if verdict == "take" else float(verdict), 0.001)
        await msg.nak(delay=delay)
        self.wake_later(model, delay)
