"""The NATS backend class: every storage role, each method a short step over the connection
(:mod:`._client`), the records (:mod:`._records`), submitting and leasing (:mod:`._work`) and
the timer sweep (:mod:`._sweep`). Public methods turn driver errors into BackendError through
:func:`genspool.backends._errors.translated`, after waiting out a reconnect.

Slots, ``reserve`` (the :func:`~genspool.core.gcra.gcra` arithmetic) and ``kv_*`` are
compare-and-set loops on ``<prefix>_coord``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import nats.js.errors
import orjson
from nats.aio.msg import Msg

from genspool.backends._urls import shown_url
from genspool.backends.nats import timers
from genspool.backends.nats._client import Conn, call, quietly
from genspool.backends.nats._codec import decode, token, untoken
from genspool.backends.nats._marks import Marks
from genspool.backends.nats._records import CAS_TRIES, Conflict, Records
from genspool.backends.nats._routes import NatsRoutes
from genspool.backends.nats._sweep import sweep
from genspool.backends.nats._work import Work
from genspool.core.gcra import gcra
from genspool.core.job import WAITING, Job
from genspool.core.machine import ACTIVE, Change, LeaseSpec
from genspool.core.roles import (
    Coordination,
    JobFilter,
    JobQueue,
    JobStore,
    KeyValue,
    Outbox,
    Signals,
)
from genspool.exceptions import BackendError

__all__ = ["NatsBackend"]

log = logging.getLogger("genspool.backends.nats")

T = TypeVar("T")

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")


def _matches(job: Job, flt: JobFilter) -> bool:
    return (
        (flt.status is None or job.status == flt.status)
        and (flt.model is None or job.model == flt.model)
        and (flt.tenant is None or job.tenant == flt.tenant)
    )


class NatsBackend(JobQueue, JobStore, Coordination, KeyValue, Signals, Outbox, NatsRoutes):
    kind = "NATS"
    cross_process_events = True

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, prefix: str = "genspool") -> None:
        super().__init__()
        if not _PREFIX.match(prefix):
            raise BackendError(f"NATS prefix {prefix!r} may only use letters, digits, _ and -")
        self.url, self.prefix = url, prefix
        self.shown_url = shown_url(url)
        self._conn = Conn(url, prefix, self.shown_url)
        self._records = Records(self._conn)
        self._marks = Marks(self._conn)
        self._work = Work(self._conn, self._records, self._marks, self._wake_later)
        self._wake_timers: dict[str, asyncio.TimerHandle] = {}

    @classmethod
    def from_url(cls, url: str) -> NatsBackend:
        """``nats://host:port?prefix=name``; the prefix names every stream, bucket and subject."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise BackendError(f"{shown_url(url)!r} names no NATS server; use nats://host:4222")
        prefix = parse_qs(parts.query).get("prefix", ["genspool"])[0]
        return cls(parts._replace(path="", query="", fragment="").geturl(), prefix=prefix)

    # -- resource ----------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._conn.connect(self._on_wake)

    async def close(self) -> None:
        for handle in self._wake_timers.values():
            handle.cancel()
        self._wake_timers.clear()
        await self._conn.close()

    @call("destroy")
    async def destroy(self) -> None:
        # The routes' bucket is emptied, not deleted: its sequence, the revision, goes on.
        await self._conn.drop(keep={"routes"})
        await self._conn.create_objects()
        await self._clear_routes()

    @call("drop")
    async def drop(self) -> None:
        """Delete the streams and buckets of this prefix, leaving nothing behind."""
        await self._conn.drop()

    # -- queue -------------------------------------------------------------------------------

    @call("enqueue")
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        out, new = await self._work.enqueue(jobs)
        await self._wake({j.model for j in new})
        return out

    @call("lease")
    async def lease(self, spec: LeaseSpec) -> list[Job]:
        return await self._work.lease(spec)

    @call("extend")
    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        recs = await self._records.get_many(i for i, _ in held)

        def prolong(tok: str) -> Callable[[Job], Job | None]:
            def decide(job: Job) -> Job | None:
                if not tok or job.lease_token != tok:
                    return None
                job.lease_expires_at = until
                return job

            return decide

        todo = [(recs[i], t) for i, t in held if i in recs and recs[i].job.lease_token == t]
        done = await asyncio.gather(*(self._records.transition(r, prolong(t)) for r, t in todo))
        return sum(applied for applied, _ in done)

    @call("apply")
    async def apply(self, changes: Sequence[Change]) -> set[str]:
        recs = await self._records.get_many(c.job.id for c in changes)

        def fenced(change: Change) -> Callable[[Job], Job | None]:
            fence = (change.status, change.lease_token)
            return lambda job: change.job if (job.status, job.lease_token) == fence else None

        todo = [c for c in changes if c.job.id in recs and fenced(c)(recs[c.job.id].job)]
        await self._marks.mark(c.job.id for c in todo)
        done = await asyncio.gather(
            *(self._records.transition(recs[c.job.id], fenced(c)) for c in todo)
        )
        written = {c.job.id for c, (applied, _) in zip(todo, done, strict=True) if applied}
        await self._wake(
            {c.job.model for c in todo if c.job.id in written and c.job.status in WAITING}
        )
        return written

    @call("get_many")
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        recs = await self._records.get_many(job_ids)
        return [recs[i].job for i in dict.fromkeys(job_ids) if i in recs]

    @call("stale_leases")
    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        found = await sweep(self._conn, self._records, "lease", now, timers.lease, limit=limit)
        stale = list({j.id: j for j in found}.values())
        stale.sort(key=lambda j: j.lease_expires_at or 0.0)
        return stale[:limit]

    @call("overdue")
    async def overdue(self, now: float, limit: int) -> list[Job]:
        judge = timers.expire(WAITING, ACTIVE)
        found = await sweep(self._conn, self._records, "expire", now, judge, limit=limit)
        return list({j.id: j for j in found}.values())[:limit]

    @call("purge")
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        removed = 0

        async def delete(jobs: Sequence[Job]) -> None:
            nonlocal removed
            for job in jobs:
                removed += await self._records.delete(job)

        # Read before the sweep: a job marked later was written later, so it finished after
        # the cutoff (or is not purgeable any more) when the sweep reads it.
        judge = timers.purge(frozenset(statuses), await self._marks.held())
        await sweep(self._conn, self._records, "purge", finished_before, judge, act=delete)
        return removed

    @call("depth")
    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        """O(jobs stored): a scan of the records."""
        counted = frozenset(statuses)
        out: dict[str, dict[str, int]] = {}
        for job in await self._all_jobs():
            if job.status in counted:
                per_model = out.setdefault(job.model, {})
                per_model[job.status.value] = per_model.get(job.status.value, 0) + 1
        return out

    @call("oldest_waiting")
    async def oldest_waiting(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for job in await self._all_jobs():
            if job.status in WAITING:
                out[job.model] = min(job.created_at, out.get(job.model, job.created_at))
        return out

    async def _all_jobs(self) -> list[Job]:
        entries = await self._conn.scan("jobs", ">", keys_only=False)
        return [decode(e.value) for e in entries if e.value is not None]

    # -- outbox ------------------------------------------------------------------------------
    # Marks are written before the queue writes they stand for (see ._marks).

    @call("epoch")
    async def epoch(self) -> str:
        return await self._marks.epoch()

    @call("pending")
    async def pending(self, before: float, limit: int) -> list[tuple[Job, float]]:
        marks = await self._marks.older(before, limit)
        recs = await self._records.get_many(i for i, _ in marks)
        await self._marks.forget([i for i, _ in marks if i not in recs])
        return [(recs[i].job, at) for i, at in marks if i in recs]

    @call("copied")
    async def copied(self, marks: Sequence[tuple[str, float]]) -> None:
        await self._marks.cleared(marks)

    # -- store -------------------------------------------------------------------------------

    @call("list_jobs")
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """O(jobs stored): the keys are scanned, then records read newest first."""
        keys = [e.key for e in await self._conn.scan("jobs", ">", keys_only=True)]
        ids = sorted((k for k in keys if flt.before is None or k < flt.before), reverse=True)
        out: list[Job] = []
        chunk = max(2 * flt.limit, 64)
        for start in range(0, len(ids), chunk):
            page = ids[start : start + chunk]
            recs = await self._records.get_many(page)
            out += [recs[i].job for i in page if i in recs and _matches(recs[i].job, flt)]
            if len(out) >= flt.limit:
                break
        return out[: flt.limit]

    @call("put")
    async def put(self, jobs: Sequence[Job]) -> None:
        await self._records.put(jobs)
        await self._wake({j.model for j in jobs if j.status in WAITING})

    # -- coordination --------------------------------------------------------------------------

    async def _cas(self, key: str, change: Callable[[bytes | None], tuple[bytes | None, T]]) -> T:
        """Read-modify-write of a coord key; ``change`` returns (new value or None to leave
        the key as it is, answer). Retries on a revision conflict."""
        kv = self._conn.bucket("coord")
        for _ in range(CAS_TRIES * 4):
            try:
                entry = await kv.get(key)
                value, rev = entry.value, entry.revision
            except nats.js.errors.KeyNotFoundError:
                value, rev = None, None
            new, answer = change(value)
            if new is None:
                return answer
            try:
                if rev is None:
                    await kv.create(key, new)
                else:
                    await kv.update(key, new, last=rev)
                return answer
            except Conflict:
                await asyncio.sleep(random.uniform(0, 0.005))
        raise BackendError(f"{key} kept changing under concurrent writers; try again")

    @call("acquire_slot")
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        def take(value: bytes | None) -> tuple[bytes | None, bool]:
            stored: dict[str, float] = orjson.loads(value) if value else {}
            holders = {h: t for h, t in stored.items() if t > now}  # expired slots are free
            if holder not in holders and len(holders) >= limit:
                return None, False
            holders[holder] = now + ttl_s
            return orjson.dumps(holders), True

        return await self._cas(f"slot.{token(name)}", take)

    @call("release_slot")
    async def release_slot(self, name: str, holder: str) -> None:
        def give(value: bytes | None) -> tuple[bytes | None, None]:
            holders: dict[str, float] = orjson.loads(value) if value else {}
            if holder not in holders:
                return None, None
            del holders[holder]
            return orjson.dumps(holders), None

        await self._cas(f"slot.{token(name)}", give)

    @call("reserve")
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        def take(value: bytes | None) -> tuple[bytes | None, float]:
            tat, wait = gcra(orjson.loads(value) if value else None, now, cost, rate_per_s, burst)
            return (orjson.dumps(tat) if wait == 0.0 else None), wait

        return await self._cas(f"rate.{token(key)}", take)

    @call("server_time")
    async def server_time(self) -> float:
        # NATS has no time call: the server stamps each message it stores, so store one (a
        # key of the coord bucket, kept to one revision) and read its stamp back.
        bucket = self._conn.buckets["coord"]
        seq = await self._conn.bucket("coord").put("clock", b"")
        try:
            stored = await self._conn.jet().get_msg(f"KV_{bucket}", seq=seq)
        except nats.js.errors.NotFoundError:  # another process's put replaced it: as recent
            stored = await self._conn.jet().get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.clock")
        if stored.time is None:
            raise BackendError(f"NATS at {self.shown_url} stored a message with no time stamp")
        return stored.time.timestamp()

    # -- key-value ---------------------------------------------------------------------------

    def _kv_key(self, namespace: str, key: str) -> str:
        return f"kv.{token(namespace)}.{token(key)}"

    @call("kv_put")
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._conn.bucket("coord").put(self._kv_key(namespace, key), value)

    @call("kv_get")
    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        try:
            entry = await self._conn.bucket("coord").get(self._kv_key(namespace, key))
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    @call("kv_list")
    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        entries = await self._conn.scan("coord", f"kv.{token(namespace)}.>", keys_only=False)
        return {
            untoken(e.key.rsplit(".", 1)[1]): e.value or b""
            for e in sorted(entries, key=lambda e: e.key)
        }

    @call("kv_delete")
    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self._conn.remove("coord", self._kv_key(namespace, key))

    # -- signals -------------------------------------------------------------------------------

    @call("broadcast")
    async def broadcast(self, payload: bytes) -> None:
        await self._conn.client().publish(self._conn.events_subject, payload)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        """Deliver every broadcast until cancelled. The client replays the subscription after
        each reconnect, so a server restart only loses what was sent while it was down."""

        async def on_message(msg: Msg) -> None:
            try:
                deliver(msg.data)
            except Exception:
                log.exception("an event listener failed on a broadcast")

        sub = await self._conn.client().subscribe(self._conn.events_subject, cb=on_message)
        try:
            await asyncio.Event().wait()
        finally:
            await quietly(sub.unsubscribe())

    async def _on_wake(self, msg: Msg) -> None:
        self.notify(msg.data.decode())

    async def _wake(self, models: Iterable[str]) -> None:
        """Tell idle workers everywhere (this process included) that ``models`` have work."""
        nc = self._conn.client()
        for model in models:
            self.notify(model)
            await nc.publish(self._conn.wake_subject, model.encode())

    def _wake_later(self, model: str, delay: float) -> None:
        """Wake this process's idle lane when a retry it saw becomes due."""
        loop = asyncio.get_running_loop()
        handle = self._wake_timers.get(model)
        if handle is not None and handle.when() <= loop.time() + delay:
            return
        if handle is not None:
            handle.cancel()

        def fire() -> None:
            self._wake_timers.pop(model, None)
            self.notify(model)

        self._wake_timers[model] = loop.call_later(delay, fire)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        """Wait for a wake-up; poll at ``poll_interval_s`` while the connection is down."""
        nc = self._conn.nc
        connected = nc is not None and nc.is_connected
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                event.wait(), timeout if connected else min(timeout, self.poll_interval_s)
            )
        event.clear()
