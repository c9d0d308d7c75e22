"""The NATS backend: jobs in a JetStream key-value bucket, work and timers in JetStream streams.

URL: ``nats://[user:password@]host:port?prefix=name`` (prefix ``genspool`` by default). Every
object lives under the prefix: KV buckets ``<prefix>_jobs`` (job id -> orjson record),
``<prefix>_idem`` (tenant + idempotency key -> job id) and ``<prefix>_coord`` (slots, rate
limits, small values); streams ``<prefix>_work`` and ``<prefix>_timers`` with their durable
pull consumers; core subjects ``<prefix>.events`` and ``<prefix>.wake``.

**The record is the truth.** The queue facade decides retries, backoffs and dead letters
(``Queue.maintain()`` reads ``expired_leases()`` and calls ``finish()`` with a ``retrying``
outcome), so a job's state is its KV record, and every transition is a compare-and-set on the
record's revision (``kv.update(key, value, last=revision)``), re-read and re-checked on a
conflict. That is what fences a stale worker in ``finish`` and ``extend``: the lease token is
checked on the revision that is then replaced. What the issue sketched but does not fit this
contract: JetStream's ``max_deliver`` does not dead-letter (the facade does), and a message is
not held un-acked for the whole lease with ``in_progress`` heartbeats (a lease length is per
call here, a consumer's ``ack_wait`` is fixed, and a reclaim must go through the facade).

**Work.** Stream ``<prefix>_work`` (work-queue retention) carries job ids on one subject per
*lane*, ``<prefix>.work.<model>.<priority>.<tenant>``, each with a durable pull consumer that
the server removes after an idle hour. JetStream has no priorities or ranks, so ``lease`` asks
the stream which lanes of the model hold messages (one stream-info request), reads the rank at
the head of each lane when there are several (one direct read per lane, in parallel), plans
how many to take from each (lowest ``(-priority, rank)`` first, counting a tenant's later jobs
as the next ranks, which is what the fair-share ranks are), fetches them (``no_wait``, in
parallel), reads the records, publishes one lease timer, moves the ready jobs to ``running`` by
compare-and-set and acks their messages. A message whose job is not waiting any more
(cancelled, leased through a duplicate, ended) is acked away; one whose retry is not due yet is
nak'd with the remaining delay.

**Notices before writes.** A message that makes a job findable (work, a timer) is published
*before* the record write it stands for and carries the revision that write replaces. A reader
that finds the record still at that revision (or, for a new job, not there yet) knows the
write is in flight and retries the message shortly; past a grace period it drops it. So a
process that dies between the two steps leaves no job that nothing will ever look at, and a
duplicate message is harmless because the record decides.

**Timers** (stream ``<prefix>_timers``, one consumer each) replace the secondary indexes a
SQL store would use: ``lease`` (one message per lease call: token, deadline, ids; re-armed by
nak with a delay while the lease is extended) answers ``expired_leases``; ``expire`` (one per
job with ``expires_at``) answers ``expire``; ``purge`` (one per job that ended as succeeded,
cancelled or expired) answers ``purge``. Each costs O(due) per call, not O(jobs).

**Limits.** ``list_jobs`` and ``depth`` scan the jobs bucket (keys, then records) and cost
O(jobs stored); a large deployment that lists often should use PostgreSQL as the store.
Priority order is exact; within a priority the order by rank is exact between tenants' heads
and follows publish order inside one tenant's lane (a retry goes to the back of its lane rather
than ahead by its old rank). A lease costs a request per lane of the model that holds work, so
many tenants with waiting work make leases dearer. ``purge`` may lag behind the cutoff by the
clock skew between processes. A call made while the client reconnects waits up to
``RECONNECT_GRACE_S`` for it, then fails with ``BackendError``; a call cut off mid-way may
still take effect once the server is back, as with any network store (fencing keeps that
safe). The KV buckets and streams use file storage, so jobs survive a server restart; events
published while a listener is disconnected are lost (subscribers also poll). Idempotency keys
are claimed in ``<prefix>_idem`` with ``create`` (fails when the key exists); a claim whose
job record never appeared (its process died) is taken over after a grace period.

Slots, ``reserve`` (the :func:`gcra` arithmetic) and ``kv_*`` are compare-and-set loops on
``<prefix>_coord``. The connection reconnects by itself forever with a capped, jittered
exponential backoff; subscriptions (events, wake-ups) are replayed by the client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import heapq
import itertools
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client, Server
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from genspool.backends.base import Backend, JobFilter, gcra
from genspool.core.job import WAITING, Job, JobStatus, Outcome
from genspool.exceptions import BackendError

__all__ = ["NatsBackend"]

log = logging.getLogger("genspool.backends.nats")

P = ParamSpec("P")
T = TypeVar("T")

#: How long a JetStream request may take before the call fails with BackendError.
REQUEST_TIMEOUT_S = 5.0
#: How long ``connect()`` tries before it gives up on a server that is not there.
CONNECT_BUDGET_S = 2.0
#: Reconnect backoff after the connection is lost: doubling from the base, capped, jittered.
RECONNECT_BASE_S, RECONNECT_CAP_S = 0.1, 1.0
#: How long a call made while the client reconnects waits for it before it fails.
RECONNECT_GRACE_S = 2.0
#: How long a notice whose record write has not landed yet is kept before it is dropped.
INFLIGHT_GRACE_S = 30.0
#: When a notice's record write is in flight, look again after this long.
INFLIGHT_RETRY_S = 0.05
#: A work message fetched but never acked (its leaser died mid-call) comes back after this.
WORK_ACK_WAIT_S = 30.0
#: After ``expired_leases`` reported a job, check its lease timer again after this long.
REAPER_RECHECK_S = 2.0
#: A purge notice not due yet is looked at again after at most this long.
PURGE_RECHECK_S = 1.0
#: Compare-and-set attempts before a transition gives up (only under heavy write contention).
CAS_TRIES = 16
#: How long an idempotent submit waits for the record of a key claimed by another call.
IDEM_WAIT_S = 2.0
FETCH_BATCH = 256
#: Fetch rounds in one lease call when fetched messages turned out stale.
FETCH_ROUNDS = 4
#: A tenant's work consumer that no lease used for this long is removed by the server.
LANE_IDLE_S = 3600.0

PURGEABLE = frozenset({JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.EXPIRED})
EXPIRED_ERROR = {"code": "expired", "message": "not started before expires_at"}
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
_FIELDS = tuple(f.name for f in dataclasses.fields(Job))

Conflict = nats.js.errors.KeyWrongLastSequenceError
Verdict = Literal["take", "drop"] | float  # a float is a delay before looking again


# -- encoding --------------------------------------------------------------------------------


def _encode(job: Job) -> bytes:
    return orjson.dumps({name: getattr(job, name) for name in _FIELDS})


def _decode(data: bytes) -> Job:
    fields = orjson.loads(data)
    fields["status"] = JobStatus(fields["status"])
    return Job(**fields)


def _token(text: str) -> str:
    """Any string as one key/subject token (KV keys allow ``[-/_=.A-Za-z0-9]``)."""
    return "k" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _untoken(token: str) -> str:
    raw = token[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


def _name_token(name: str) -> str:
    """A model or tenant name as a subject token and consumer-name part: readable, and told
    apart by a hash."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:32]
    return f"{readable}-{hashlib.blake2b(name.encode(), digest_size=5).hexdigest()}"


def _priority_token(priority: int) -> str:
    return f"p{priority}" if priority >= 0 else f"n{-priority}"


def _priority(token: str) -> int:
    return int(token[1:]) if token[0] == "p" else -int(token[1:])


def _masked(url: str) -> str:
    """The URL without its secret: a password, or a token given as the user part."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = "***" if parts.password is None else f"{parts.username}:***"
    return parts._replace(netloc=f"{user}@{host}").geturl()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _age(msg: Msg) -> float:
    return time.time() - msg.metadata.timestamp.timestamp()


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class _Lane:
    """One FIFO of waiting work: a model's jobs of one priority and one tenant."""

    subject: str
    priority: int

    @classmethod
    def parse(cls, subject: str) -> _Lane:
        return cls(subject, _priority(subject.split(".")[-2]))


def _virtual_ranks(lane: _Lane, head: float, n: int) -> list[tuple[int, float, _Lane]]:
    return [(-lane.priority, head + i, lane) for i in range(n)]


@dataclasses.dataclass(frozen=True, slots=True)
class _Rec:
    """A job record and the revision it was read at (what a compare-and-set replaces)."""

    job: Job
    rev: int


def _inflight(rec: _Rec | None, superseded: int, msg: Msg) -> Verdict | None:
    """The verdict on a notice whose record write has not landed yet, else None."""
    if rec is not None and rec.rev != superseded:
        return None
    return INFLIGHT_RETRY_S if _age(msg) < INFLIGHT_GRACE_S else "drop"


def _work_verdict(rec: _Rec | None, superseded: int, msg: Msg, now: float) -> Verdict:
    """What ``lease`` does with a work message, given the job's record."""
    pending = _inflight(rec, superseded, msg)
    if pending is not None:
        return pending
    assert rec is not None
    job = rec.job
    if job.status not in WAITING or (job.expires_at is not None and job.expires_at <= now):
        return "drop"  # stale duplicate, or a job that expire() will end
    if job.available_at > now:
        return job.available_at - now
    return "take"


# -- state transitions, as the SQLite queries do them ------------------------------------


def _leased(job: Job, token: str, until: float, now: float) -> Job:
    return dataclasses.replace(
        job,
        status=JobStatus.RUNNING,
        lease_token=token,
        lease_expires_at=until,
        attempts=job.attempts + 1,
        started_at=now,
    )


def _held(job: Job, token: str) -> bool:
    return job.status is JobStatus.RUNNING and job.lease_token == token


def _finished(job: Job, o: Outcome, now: float) -> Job:
    waiting = o.status in WAITING
    return dataclasses.replace(
        job,
        status=o.status,
        result=o.result,
        error=o.error,
        attempts=job.attempts - (o.status is JobStatus.QUEUED),
        available_at=job.available_at if o.available_at is None else o.available_at,
        retried_at=now if o.status is JobStatus.RETRYING else job.retried_at,
        finished_at=None if waiting else now,
        lease_token=None,
        lease_expires_at=None,
    )


def _matches(job: Job, flt: JobFilter) -> bool:
    return (
        (flt.status is None or job.status == flt.status)
        and (flt.model is None or job.model == flt.model)
        and (flt.tenant is None or job.tenant == flt.tenant)
    )


def _translated(
    what: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Turn driver errors of a public method into one-line BackendErrors naming the URL."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            self = args[0]
            assert isinstance(self, NatsBackend)
            await self._check_connected(what)
            try:
                return await fn(*args, **kwargs)
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                raise BackendError(
                    f"NATS {what} failed at {self.shown_url}: {_describe(exc)}"
                ) from exc

        return call

    return wrap


class _ConsumerGone(Exception):
    """The consumer a fetch asked does not exist (deleted by ``destroy`` elsewhere)."""


class NatsBackend(Backend):
    cross_process_events = True

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, prefix: str = "genspool") -> None:
        super().__init__()
        if not _PREFIX.match(prefix):
            raise BackendError(f"NATS prefix {prefix!r} may only use letters, digits, _ and -")
        self.url, self.prefix = url, prefix
        self.shown_url = _masked(url)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}
        self._consumers: set[str] = set()
        self._wake_sub: Subscription | None = None
        self._wake_timers: dict[str, asyncio.TimerHandle] = {}
        self._connected = asyncio.Event()
        p = prefix
        self.work_stream, self.timer_stream = f"{p}_work", f"{p}_timers"
        self.buckets = {"jobs": f"{p}_jobs", "idem": f"{p}_idem", "coord": f"{p}_coord"}
        self.events_subject, self.wake_subject = f"{p}.events", f"{p}.wake"
        self.timers = {
            kind: (f"{p}_{kind}", f"{p}.timer.{kind}") for kind in ("lease", "expire", "purge")
        }

    @classmethod
    def from_url(cls, url: str) -> NatsBackend:
        """``nats://host:port?prefix=name``; the prefix names every stream, bucket and subject."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise BackendError(f"{_masked(url)!r} names no NATS server; use nats://host:4222")
        prefix = parse_qs(parts.query).get("prefix", ["genspool"])[0]
        return cls(parts._replace(path="", query="", fragment="").geturl(), prefix=prefix)

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        nc = await self._open()
        try:
            self._nc, self._js = nc, nc.jetstream(timeout=REQUEST_TIMEOUT_S)
            await self._create_objects()
            self._wake_sub = await nc.subscribe(self.wake_subject, cb=self._on_wake)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            await self.close()
            raise BackendError(
                f"NATS at {self.shown_url} has no usable JetStream (is the server run with -js?): "
                f"{_describe(exc)}"
            ) from exc

    async def _open(self) -> Client:
        nc = Client()
        last: list[str] = []

        async def on_error(exc: Exception) -> None:
            last[:] = [_describe(exc)]
            log.debug("NATS %s: %s", self.shown_url, exc)

        async def on_disconnect() -> None:
            self._connected.clear()
            if not nc.is_closed:  # not our own close()
                log.warning("lost the connection to NATS at %s; reconnecting", self.shown_url)

        async def on_reconnect() -> None:
            self._connected.set()
            log.info("reconnected to NATS at %s", self.shown_url)

        try:
            # The first attempt retries briefly on its own (reconnect_time_wait); once connected
            # the client reconnects forever through _backoff.
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.url],
                    name="genspool",
                    connect_timeout=1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    reconnect_to_server_handler=_backoff,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                CONNECT_BUDGET_S,
            )
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            await _quietly(nc.close())
            why = last[0] if last else _describe(exc)
            raise BackendError(f"cannot connect to NATS at {self.shown_url}: {why}") from exc
        self._connected.set()
        return nc

    async def _create_objects(self) -> None:
        js = self._jet()
        storage = api.StorageType.FILE
        await js.add_stream(
            name=self.work_stream,
            subjects=[f"{self.prefix}.work.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
        )
        await js.add_stream(
            name=self.timer_stream,
            subjects=[f"{self.prefix}.timer.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
        )
        for kind, bucket in self.buckets.items():
            self._kv[kind] = await js.create_key_value(bucket=bucket, history=1, storage=storage)
        for durable, subject in self.timers.values():
            await self._add_consumer(self.timer_stream, durable, subject)

    async def _add_consumer(
        self, stream: str, durable: str, subject: str, idle_s: float | None = None
    ) -> None:
        await self._jet().add_consumer(
            stream,
            durable_name=durable,
            filter_subject=subject,
            inactive_threshold=idle_s,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=WORK_ACK_WAIT_S,
            max_deliver=-1,  # the facade dead-letters; a message is only ever acked away
            max_ack_pending=-1,  # delayed retries and timers wait as pending messages
        )
        self._consumers.add(durable)

    async def close(self) -> None:
        for handle in self._wake_timers.values():
            handle.cancel()
        self._wake_timers.clear()
        nc, self._nc, self._js, self._wake_sub = self._nc, None, None, None
        self._connected.clear()
        self._kv.clear()
        self._consumers.clear()
        if nc is not None and not nc.is_closed:
            await _quietly(nc.close())

    @_translated("destroy")
    async def destroy(self) -> None:
        await self.drop()
        await self._create_objects()

    @_translated("drop")
    async def drop(self) -> None:
        """Delete the streams and buckets of this prefix, leaving nothing behind."""
        js = self._jet()
        streams = [self.work_stream, self.timer_stream, *(f"KV_{b}" for b in self.buckets.values())]
        for stream in streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        self._consumers.clear()

    async def _check_connected(self, what: str) -> None:
        """While the client reconnects, give it a moment (a restarting server is back within
        it), then fail: a request sent now would only sit in the client's buffer until it
        timed out, and might still be applied later."""
        nc = self._nc
        if nc is None or nc.is_connected or nc.is_closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), RECONNECT_GRACE_S)
        if not nc.is_connected:
            raise BackendError(
                f"NATS {what} failed at {self.shown_url}: server unreachable, reconnecting"
            )

    def _conn(self) -> Client:
        if self._nc is None:
            raise BackendError(f"not connected to NATS at {self.shown_url}; call connect() first")
        return self._nc

    def _jet(self) -> JetStreamContext:
        if self._js is None:
            raise BackendError(f"not connected to NATS at {self.shown_url}; call connect() first")
        return self._js

    def _bucket(self, kind: str) -> KeyValue:
        self._jet()
        return self._kv[kind]

    # -- records -----------------------------------------------------------------------------

    async def _get_rec(self, job_id: str) -> _Rec | None:
        try:
            entry = await self._bucket("jobs").get(job_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        assert entry.value is not None and entry.revision is not None
        return _Rec(_decode(entry.value), entry.revision)

    async def _get_recs(self, job_ids: Iterable[str]) -> dict[str, _Rec]:
        ids = list(dict.fromkeys(job_ids))
        found = await asyncio.gather(*(self._get_rec(i) for i in ids))
        return {i: r for i, r in zip(ids, found, strict=True) if r is not None}

    async def _transition(
        self, rec: _Rec, change: Callable[[Job], Job | None], now: float
    ) -> tuple[bool, _Rec | None]:
        """Compare-and-set ``change(job)`` onto the record, re-reading it on a conflict.
        ``change`` returns None when the job is no longer eligible. Returns whether it was
        applied and the latest record seen (None when the job is gone)."""
        current: _Rec | None = rec
        for _ in range(CAS_TRIES):
            assert current is not None
            new = change(current.job)
            if new is None:
                return False, current
            await self._announce(new, current.rev, now)
            try:
                rev = await self._bucket("jobs").update(new.id, _encode(new), last=current.rev)
                return True, _Rec(new, rev)
            except Conflict:
                current = await self._get_rec(rec.job.id)
                if current is None:
                    return False, None
        raise BackendError(f"job {rec.job.id} kept changing under {CAS_TRIES} writes; try again")

    async def _announce(self, job: Job, superseded: int, now: float) -> None:
        """Publish what makes the job findable in its new state, before the write itself."""
        note: dict[str, Any] = {"id": job.id, "r": superseded}
        if job.status in WAITING:
            await self._publish(self._work_subject(job), {**note, "k": job.rank})
        elif job.status in PURGEABLE:
            await self._publish(self.timers["purge"][1], {**note, "f": now})

    async def _publish(self, subject: str, note: dict[str, Any]) -> None:
        await self._jet().publish(subject, orjson.dumps(note))

    def _work_subject(self, job: Job) -> str:
        lane = (_name_token(job.model), _priority_token(job.priority), _name_token(job.tenant))
        return f"{self.prefix}.work.{'.'.join(lane)}"

    async def _api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self._conn().request(
            f"$JS.API.{subject}", orjson.dumps(body), timeout=REQUEST_TIMEOUT_S
        )
        answer: dict[str, Any] = orjson.loads(reply.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])  # raises
        return answer

    async def _remove(self, kind: str, key: str) -> bool:
        """Delete a key outright (a stream purge leaves no tombstone); whether it existed."""
        bucket = self.buckets[kind]
        answer = await self._api(f"STREAM.PURGE.KV_{bucket}", {"filter": f"$KV.{bucket}.{key}"})
        return int(answer.get("purged", 0)) > 0

    # -- submitting --------------------------------------------------------------------------

    @_translated("enqueue")
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
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
                out.append(_decode(_encode(stored[jobs[first].id])))
        await self._wake({j.model for j in new})
        return out

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
        notes = [
            self._publish(self._work_subject(j), {"id": j.id, "r": 0, "k": j.rank})
            for j in records.values()
        ]
        notes += [
            self._publish(self.timers["expire"][1], {"id": j.id, "r": 0, "e": j.expires_at})
            for j in records.values()
            if j.expires_at is not None
        ]
        await asyncio.gather(*notes)
        kv = self._bucket("jobs")
        try:
            await asyncio.gather(*(kv.create(i, _encode(j)) for i, j in records.items()))
        except Conflict as exc:
            raise BackendError("a job with one of these ids exists already") from exc
        return records

    async def _claim_key(self, job: Job) -> Job | None:
        """Claim the job's idempotency key; the job stored under it when it was taken."""
        assert job.idempotency_key is not None
        key = f"{_token(job.tenant)}.{_token(job.idempotency_key)}"
        idem = self._bucket("idem")
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
            rec = await self._get_rec(entry.value.decode())
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

    @_translated("lease")
    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        token, until = os.urandom(8).hex(), now + lease_s
        model_token = _name_token(model)
        leased: list[Job] = []
        for _ in range(FETCH_ROUNDS):  # more rounds only when fetched messages were stale
            want = limit - len(leased)
            shares = await self._plan(model_token, want)
            fetched = await asyncio.gather(
                *(self._fetch_work(lane, n) for lane, n in shares.items())
            )
            msgs = [m for batch in fetched for m in batch]
            leased += await self._take(msgs, model, token, until, now)
            if len(leased) >= limit or len(msgs) < want:
                break
        leased.sort(key=lambda j: (-j.priority, j.rank, j.available_at))
        return leased

    async def _plan(self, model_token: str, want: int) -> dict[_Lane, int]:
        """How many messages to fetch from each (priority, tenant) lane of the model: the
        ``want`` lowest of ``(-priority, rank)``, taking a tenant's jobs to have consecutive
        ranks from the one at the head of its lane (as the fair-share ranks are)."""
        pattern = f"{self.prefix}.work.{model_token}.*.*"
        info = await self._jet().stream_info(self.work_stream, subjects_filter=pattern)
        lanes = sorted(
            ((_Lane.parse(s), n) for s, n in (info.state.subjects or {}).items() if n),
            key=lambda ln: -ln[0].priority,
        )
        counts: dict[_Lane, int] = {}
        for lane, n in lanes:  # the highest priorities that hold enough for ``want``
            if sum(counts.values()) >= want and lane.priority < min(c.priority for c in counts):
                break
            counts[lane] = n
        if len(counts) <= 1:
            return {lane: min(n, want) for lane, n in counts.items()}
        heads = await asyncio.gather(*(self._head_rank(lane.subject) for lane in counts))
        candidates = heapq.merge(
            *(
                _virtual_ranks(lane, head, min(n, want))
                for (lane, n), head in zip(counts.items(), heads, strict=True)
                if head is not None
            )
        )
        shares: dict[_Lane, int] = {}
        for _, _, lane in itertools.islice(candidates, want):
            shares[lane] = shares.get(lane, 0) + 1
        return shares

    async def _head_rank(self, subject: str) -> float | None:
        """The rank carried by the oldest message of a lane (None when it is empty now)."""
        try:
            answer = await self._api(
                f"STREAM.MSG.GET.{self.work_stream}", {"next_by_subj": subject, "seq": 1}
            )
        except nats.js.errors.NotFoundError:
            return None
        note = orjson.loads(base64.b64decode(answer["message"]["data"]))
        return float(note["k"])

    async def _fetch_work(self, lane: _Lane, batch: int) -> list[Msg]:
        durable = lane.subject.replace(".", "_")
        for _ in range(2):
            if durable not in self._consumers:
                # A tenant's lane lives while it is used; the server drops it when idle and
                # the next lease makes it again (its messages stay in the stream meanwhile).
                await self._add_consumer(self.work_stream, durable, lane.subject, LANE_IDLE_S)
            try:
                return await self._fetch(self.work_stream, durable, batch)
            except _ConsumerGone:
                self._consumers.discard(durable)
        return []

    async def _fetch(self, stream: str, durable: str, batch: int) -> list[Msg]:
        """Up to ``batch`` messages that are deliverable now, without waiting for more."""
        nc = self._conn()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: list[Msg] = []
        try:
            request = orjson.dumps({"batch": batch, "no_wait": True})
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", request, reply=inbox)
            while len(out) < batch:
                msg = await sub.next_msg(timeout=REQUEST_TIMEOUT_S)
                status = msg.headers.get("Status") if msg.headers else None
                if status is None:
                    out.append(msg)
                elif status in ("404", "408"):  # no (more) messages
                    break
                elif status == "503":
                    raise _ConsumerGone(durable)
                else:
                    raise nats.errors.Error(f"fetch from {stream}/{durable}: status {status}")
        except nats.errors.TimeoutError:
            if not out:
                raise  # the server did not answer; what was delivered comes back after ack_wait
        finally:
            await _quietly(sub.unsubscribe())
        return out

    async def _take(
        self, msgs: Sequence[Msg], model: str, token: str, until: float, now: float
    ) -> list[Job]:
        """Lease the jobs of fetched work messages that are ready; dispose of the others."""
        notes = [(m, orjson.loads(m.data)) for m in msgs]
        recs = await self._get_recs(n["id"] for _, n in notes)
        ready: dict[str, list[Msg]] = {}
        for msg, note in notes:
            verdict = _work_verdict(recs.get(note["id"]), note["r"], msg, now)
            if verdict == "take":
                ready.setdefault(note["id"], []).append(msg)
            else:
                await self._dispose(msg, verdict, model)
        if not ready:
            return []
        # The lease timer goes out before the records change, so no lease is left unwatched.
        await self._publish(self.timers["lease"][1], {"t": token, "u": until, "ids": list(ready)})

        def change(job: Job) -> Job | None:
            waiting = job.status in WAITING and job.available_at <= now
            alive = job.expires_at is None or job.expires_at > now
            return _leased(job, token, until, now) if waiting and alive else None

        results = await asyncio.gather(*(self._transition(recs[i], change, now) for i in ready))
        leased = []
        for group, (applied, latest) in zip(ready.values(), results, strict=True):
            if applied:
                assert latest is not None
                leased.append(latest.job)
                for msg in group:
                    await msg.ack()
                continue
            for msg in group:
                note = orjson.loads(msg.data)
                await self._dispose(msg, _work_verdict(latest, note["r"], msg, now), model)
        return leased

    async def _dispose(self, msg: Msg, verdict: Verdict, model: str | None = None) -> None:
        if verdict == "drop":
            await msg.ack()
            return
        # "take" here means the job became ready again after a lost race: look again soon.
        delay = max(INFLIGHT_RETRY_S if verdict == "take" else float(verdict), 0.001)
        await msg.nak(delay=delay)
        if model is not None:
            self._wake_later(model, delay)

    @_translated("extend")
    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        recs = await self._get_recs(i for i, _ in jobs)
        now = time.time()

        def prolong(token: str) -> Callable[[Job], Job | None]:
            return lambda j: (
                dataclasses.replace(j, lease_expires_at=until) if _held(j, token) else None
            )

        held = [(recs[i], t) for i, t in jobs if i in recs and _held(recs[i].job, t)]
        results = await asyncio.gather(*(self._transition(r, prolong(t), now) for r, t in held))
        return sum(applied for applied, _ in results)

    @_translated("finish")
    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        recs = await self._get_recs(o.job_id for o in outcomes)

        def apply(o: Outcome) -> Callable[[Job], Job | None]:
            return lambda j: _finished(j, o, now) if _held(j, o.lease_token) else None

        todo = [
            o for o in outcomes if o.job_id in recs and _held(recs[o.job_id].job, o.lease_token)
        ]
        results = await asyncio.gather(
            *(self._transition(recs[o.job_id], apply(o), now) for o in todo)
        )
        done = {o.job_id for o, (applied, _) in zip(todo, results, strict=True) if applied}
        requeued = {
            recs[o.job_id].job.model for o in todo if o.job_id in done and o.status in WAITING
        }
        await self._wake(requeued)
        return done

    # -- timers ------------------------------------------------------------------------------

    @_translated("expired_leases")
    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        durable = self.timers["lease"][0]
        expired: list[Job] = []
        while len(expired) < limit:
            msgs = await self._fetch(self.timer_stream, durable, FETCH_BATCH)
            due = []
            for msg in msgs:
                note = orjson.loads(msg.data)
                if note["u"] > now:
                    await msg.nak(delay=note["u"] - now)
                else:
                    due.append((msg, note))
            recs = await self._get_recs(i for _, n in due for i in n["ids"])
            for msg, note in due:
                alive = [
                    recs[i].job for i in note["ids"] if i in recs and _held(recs[i].job, note["t"])
                ]
                deadlines = [j.lease_expires_at or 0.0 for j in alive]
                gone = [j for j, d in zip(alive, deadlines, strict=True) if d < now]
                expired += gone
                if not alive:
                    await msg.ack()
                    continue
                # Look again at the next deadline, or soon when the facade must act on some.
                later = [d - now for d in deadlines if d >= now]
                delay = min(later + [REAPER_RECHECK_S] * bool(gone))
                await msg.nak(delay=max(delay, 0.001))
            if len(msgs) < FETCH_BATCH:
                break
        expired.sort(key=lambda j: j.lease_expires_at or 0.0)
        return expired[:limit]

    @_translated("expire")
    async def expire(self, now: float) -> list[Job]:
        durable = self.timers["expire"][0]
        out: list[Job] = []
        while True:
            msgs = await self._fetch(self.timer_stream, durable, FETCH_BATCH)
            due = []
            for msg in msgs:
                note = orjson.loads(msg.data)
                if note["e"] > now:
                    await msg.nak(delay=note["e"] - now)
                else:
                    due.append((msg, note))
            recs = await self._get_recs(n["id"] for _, n in due)
            results = await asyncio.gather(
                *(self._expire_one(m, n, recs.get(n["id"]), now) for m, n in due)
            )
            out += [job for job in results if job is not None]
            if len(msgs) < FETCH_BATCH:
                return out

    async def _expire_one(
        self, msg: Msg, note: dict[str, Any], rec: _Rec | None, now: float
    ) -> Job | None:
        pending = _inflight(rec, note["r"], msg)
        if pending is not None:
            await self._dispose(msg, pending)
            return None
        assert rec is not None

        def change(job: Job) -> Job | None:
            if job.status not in WAITING or job.expires_at is None or job.expires_at > now:
                return None
            return dataclasses.replace(
                job, status=JobStatus.EXPIRED, finished_at=now, error=dict(EXPIRED_ERROR)
            )

        applied, latest = await self._transition(rec, change, now)
        if applied:
            await msg.ack()
            assert latest is not None
            return latest.job
        if latest is None or latest.job.terminal:
            await msg.ack()  # ended otherwise; a replay arms a new timer
        else:  # running (or not due): it may come back to waiting after its deadline
            remaining = (latest.job.lease_expires_at or now) - now
            await msg.nak(delay=max(remaining, REAPER_RECHECK_S))
        return None

    @_translated("purge")
    async def purge(self, finished_before: float) -> int:
        durable = self.timers["purge"][0]
        purged = 0
        while True:
            msgs = await self._fetch(self.timer_stream, durable, FETCH_BATCH)
            due = []
            for msg in msgs:
                note = orjson.loads(msg.data)
                if note["f"] >= finished_before:
                    await msg.nak(delay=min(note["f"] - finished_before, PURGE_RECHECK_S))
                else:
                    due.append((msg, note))
            recs = await self._get_recs(n["id"] for _, n in due)
            results = await asyncio.gather(
                *(self._purge_one(m, n, recs.get(n["id"]), finished_before) for m, n in due)
            )
            purged += sum(results)
            if len(due) < FETCH_BATCH:
                return purged

    async def _purge_one(
        self, msg: Msg, note: dict[str, Any], rec: _Rec | None, cutoff: float
    ) -> bool:
        if rec is None:
            await msg.ack()
            return False
        pending = _inflight(rec, note["r"], msg)
        if pending is not None:
            await self._dispose(msg, pending)
            return False
        job = rec.job
        if job.status not in PURGEABLE:
            await msg.ack()  # the ending this notice announced did not happen
            return False
        if job.finished_at is not None and job.finished_at >= cutoff:
            await msg.nak(delay=min(job.finished_at - cutoff, PURGE_RECHECK_S))
            return False
        # An ended job never changes again, so deleting it needs no compare-and-set.
        removed = await self._remove("jobs", job.id)
        if job.idempotency_key is not None:
            await self._remove("idem", f"{_token(job.tenant)}.{_token(job.idempotency_key)}")
        await msg.ack()
        return removed

    # -- single jobs -------------------------------------------------------------------------

    @_translated("get_many")
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        recs = await self._get_recs(job_ids)
        return [recs[i].job for i in dict.fromkeys(job_ids) if i in recs]

    @_translated("cancel")
    async def cancel(self, job_id: str, now: float) -> Job | None:
        rec = await self._get_rec(job_id)
        if rec is None:
            return None

        def change(job: Job) -> Job | None:
            if job.status not in (JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING):
                return None
            return dataclasses.replace(
                job,
                status=JobStatus.CANCELLED,
                finished_at=now,
                lease_token=None,
                lease_expires_at=None,
            )

        applied, latest = await self._transition(rec, change, now)
        return latest.job if applied and latest is not None else None

    @_translated("replay")
    async def replay(self, job_id: str, now: float) -> Job | None:
        rec = await self._get_rec(job_id)
        if rec is None or rec.job.status is not JobStatus.FAILED:
            return None
        if rec.job.expires_at is not None:  # its expiry timer was dropped when it ended
            note = {"id": job_id, "r": rec.rev, "e": rec.job.expires_at}
            await self._publish(self.timers["expire"][1], note)

        def change(job: Job) -> Job | None:
            if job.status is not JobStatus.FAILED:
                return None
            return dataclasses.replace(
                job,
                status=JobStatus.QUEUED,
                attempts=0,
                result=None,
                error=None,
                available_at=now,
                finished_at=None,
                retried_at=None,
            )

        applied, latest = await self._transition(rec, change, now)
        if not applied or latest is None:
            return None
        await self._wake({latest.job.model})
        return latest.job

    # -- scans (O(jobs stored)) ----------------------------------------------------------------

    async def _scan(self, kind: str, pattern: str, *, keys_only: bool) -> list[KeyValue.Entry]:
        watcher = await self._bucket(kind).watch(pattern, ignore_deletes=True, meta_only=keys_only)
        out = []
        try:
            # nats-py leaves these two unannotated
            while (entry := await watcher.updates(REQUEST_TIMEOUT_S)) is not None:  # type: ignore[no-untyped-call]
                out.append(entry)
        finally:
            await _quietly(watcher.stop())  # type: ignore[no-untyped-call]
        return out

    @_translated("list_jobs")
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        keys = [e.key for e in await self._scan("jobs", ">", keys_only=True)]
        ids = sorted((k for k in keys if flt.before is None or k < flt.before), reverse=True)
        out: list[Job] = []
        chunk = max(2 * flt.limit, 64)
        for start in range(0, len(ids), chunk):
            page = ids[start : start + chunk]
            recs = await self._get_recs(page)
            out += [recs[i].job for i in page if i in recs and _matches(recs[i].job, flt)]
            if len(out) >= flt.limit:
                break
        return out[: flt.limit]

    @_translated("depth")
    async def depth(self) -> dict[str, dict[str, int]]:
        counted = (JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING)
        out: dict[str, dict[str, int]] = {}
        for entry in await self._scan("jobs", ">", keys_only=False):
            assert entry.value is not None
            job = _decode(entry.value)
            if job.status in counted:
                per_model = out.setdefault(job.model, {})
                per_model[job.status.value] = per_model.get(job.status.value, 0) + 1
        return out

    async def oldest_waiting(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for entry in await self._scan("jobs", ">", keys_only=False):
            assert entry.value is not None
            job = _decode(entry.value)
            if job.status in (JobStatus.QUEUED, JobStatus.RETRYING):
                out[job.model] = min(job.created_at, out.get(job.model, job.created_at))
        return out

    # -- coordination --------------------------------------------------------------------------

    async def _cas(self, key: str, change: Callable[[bytes | None], tuple[bytes | None, T]]) -> T:
        """Read-modify-write of a coord key; ``change`` returns (new value or None to leave
        the key as it is, answer). Retries on a revision conflict."""
        kv = self._bucket("coord")
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

    @_translated("acquire_slot")
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

        return await self._cas(f"slot.{_token(name)}", take)

    @_translated("release_slot")
    async def release_slot(self, name: str, holder: str) -> None:
        def give(value: bytes | None) -> tuple[bytes | None, None]:
            holders: dict[str, float] = orjson.loads(value) if value else {}
            if holder not in holders:
                return None, None
            del holders[holder]
            return orjson.dumps(holders), None

        await self._cas(f"slot.{_token(name)}", give)

    @_translated("reserve")
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        def take(value: bytes | None) -> tuple[bytes | None, float]:
            tat, wait = gcra(orjson.loads(value) if value else None, now, cost, rate_per_s, burst)
            return (orjson.dumps(tat) if wait == 0.0 else None), wait

        return await self._cas(f"rate.{_token(key)}", take)

    def _kv_key(self, namespace: str, key: str) -> str:
        return f"kv.{_token(namespace)}.{_token(key)}"

    @_translated("kv_put")
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._bucket("coord").put(self._kv_key(namespace, key), value)

    @_translated("kv_get")
    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        try:
            entry = await self._bucket("coord").get(self._kv_key(namespace, key))
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    @_translated("kv_list")
    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        entries = await self._scan("coord", f"kv.{_token(namespace)}.>", keys_only=False)
        return {
            _untoken(e.key.rsplit(".", 1)[1]): e.value or b""
            for e in sorted(entries, key=lambda e: e.key)
        }

    @_translated("kv_delete")
    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self._remove("coord", self._kv_key(namespace, key))

    # -- events and wake-ups -------------------------------------------------------------------

    @_translated("broadcast")
    async def broadcast(self, payload: bytes) -> None:
        await self._conn().publish(self.events_subject, payload)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        """Deliver every broadcast until cancelled. The client replays the subscription after
        each reconnect, so a server restart only loses what was sent while it was down."""

        async def on_message(msg: Msg) -> None:
            try:
                deliver(msg.data)
            except Exception:
                log.exception("an event listener failed on a broadcast")

        sub = await self._conn().subscribe(self.events_subject, cb=on_message)
        try:
            await asyncio.Event().wait()
        finally:
            await _quietly(sub.unsubscribe())

    async def _on_wake(self, msg: Msg) -> None:
        self.notify(msg.data.decode())

    async def _wake(self, models: Iterable[str]) -> None:
        """Tell idle workers everywhere (this process included) that ``models`` have work."""
        nc = self._conn()
        for model in models:
            self.notify(model)
            await nc.publish(self.wake_subject, model.encode())

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
        connected = self._nc is not None and self._nc.is_connected
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                event.wait(), timeout if connected else min(timeout, self.poll_interval_s)
            )
        event.clear()


def _backoff(servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
    """Reconnect delay: doubling from RECONNECT_BASE_S up to RECONNECT_CAP_S, full jitter."""
    server = min(servers, key=lambda s: s.reconnects)
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(server.reconnects, 10))
    return server, random.uniform(ceiling / 2, ceiling)


async def _quietly(step: Awaitable[Any]) -> None:
    """Run a clean-up step whose failure changes nothing (the connection is going anyway)."""
    try:
        await step
    except Exception as exc:
        log.debug("ignored during clean-up: %s", exc)
