"""The Redis backend's roles: every method of the queue, the store, coordination, key-value and
signals, each one script call, one command or one pipeline (see the package's docstring)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import cast

from redis.exceptions import RedisError

from genspool.backends._errors import translated
from genspool.backends.redis._client import RedisClient, parse_url
from genspool.backends.redis._codec import FIELDS, changes_arg, num, record, row_to_job
from genspool.backends.redis._pubsub import follow
from genspool.core.job import WAITING, Job
from genspool.core.machine import Change, LeaseSpec
from genspool.core.roles import (
    Coordination,
    JobFilter,
    JobQueue,
    JobStore,
    KeyValue,
    Outbox,
    RouteStore,
    Signals,
)

__all__ = ["RedisBackend"]

#: What the client returns for a hash: it never decodes responses.
_Hash = dict[bytes, bytes]
#: The driver's errors that mean the server could not be reached or used.
ERRORS = (RedisError, OSError)


class RedisBackend(JobQueue, JobStore, Coordination, KeyValue, Signals, Outbox, RouteStore):
    kind = "Redis"
    #: Each call (but connect, destroy, purge) fails as a BackendError after this long.
    call_timeout_s: float | None = 5.0
    cross_process_events = True
    #: Jobs per ``enqueue``/``put`` script call: a bigger batch is stored in several calls so
    #: that one call never holds the (single-threaded) server for long.
    ENQUEUE_CHUNK = 500
    #: Entries one ``purge``/``list`` call looks at, for the same reason.
    SCAN_CHUNK = 1000

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "genspool") -> None:
        super().__init__()
        self._c = RedisClient(url, prefix)
        self.url, self.prefix, self.shown_url = url, prefix, self._c.shown_url
        self._work_listener: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """``redis://[user:password@]host:port/db?prefix=name`` (or ``rediss://``); the other
        query parameters go to redis-py."""
        plain, prefix = parse_url(url)
        return cls(plain, prefix=prefix)

    # -- resource ----------------------------------------------------------------------------

    @translated("connect", (*ERRORS, ValueError))
    async def connect(self) -> None:
        await self._c.connect()

    async def close(self) -> None:
        if self._work_listener is not None:
            self._work_listener.cancel()
            await asyncio.gather(self._work_listener, return_exceptions=True)
            self._work_listener = None
        await self._c.close()

    @translated("destroy", ERRORS)
    async def destroy(self) -> None:
        # The routes' revision goes on (a process polling it reloads the empty set). Not
        # atomic with the deletes: destroy is for tests, which write nothing meanwhile.
        revision = await self.routes_revision()
        await self._c.delete_all()
        if revision:
            await self._c.r.set(self._c.key("routes", "revision"), revision + 1)

    @translated("drop", ERRORS)
    async def drop(self) -> None:
        await self._c.delete_all()

    # -- queue -------------------------------------------------------------------------------

    @translated("enqueue", ERRORS)
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        out: list[Job] = []
        for start in range(0, len(jobs), self.ENQUEUE_CHUNK):
            chunk = jobs[start : start + self.ENQUEUE_CHUNK]
            args: list[str | bytes] = [num(time.time())]
            args += (record(j, available_at=j.available_at or j.created_at) for j in chunk)
            replies = await self._c.run("enqueue", args)
            out += [j if r == 0 else row_to_job(r) for j, r in zip(chunk, replies, strict=True)]
        for model in {j.model for j in jobs}:
            self.notify(model)  # this process's lanes at once; others hear the PUBLISH
        return out

    @translated("lease", ERRORS)
    async def lease(self, spec: LeaseSpec) -> list[Job]:
        args: list[str | int] = [
            spec.model, spec.limit, num(spec.now), num(spec.until), spec.token, spec.running,
            spec.attempts_step, spec.worker or "",
        ]  # fmt: skip
        rows = await self._c.run("lease", args, waiting=" ".join(spec.waiting))
        return [row_to_job(r) for r in rows]

    @translated("extend", ERRORS)
    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        if not held:
            return 0
        n: int = await self._c.run("extend", [num(until), *(x for pair in held for x in pair)])
        return n

    @translated("apply", ERRORS)
    async def apply(self, changes: Sequence[Change]) -> set[str]:
        if not changes:
            return set()
        written = await self._c.run("apply", [num(time.time()), changes_arg(changes)])
        return {i.decode() for i in written}

    @translated("get", ERRORS)
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        async with self._c.r.pipeline(transaction=False) as pipe:
            for job_id in dict.fromkeys(job_ids):  # once each, as SQL's IN
                pipe.hmget(self._c.key("job", job_id), FIELDS)
            rows = await pipe.execute()
        return [row_to_job(r) for r in rows if r[0] is not None]

    @translated("stale_leases", ERRORS)
    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        rows = await self._c.run("range", ["leased", f"({num(now)}", limit])
        return [row_to_job(r) for r in rows]

    @translated("overdue", ERRORS)
    async def overdue(self, now: float, limit: int) -> list[Job]:
        rows = await self._c.run("range", ["expiring", num(now), limit])
        return [row_to_job(r) for r in rows]

    @translated("purge", ERRORS)
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        total = 0
        while statuses:
            args: list[str | int] = [num(finished_before), self.SCAN_CHUNK, *statuses]
            looked, purged = await self._c.run("purge", args)
            total += int(purged)
            if looked < self.SCAN_CHUNK:
                break
        return total

    @translated("depth", ERRORS)
    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        counts = cast(_Hash, await self._c.r.hgetall(self._c.key("depth")))
        wanted = set(statuses)
        out: dict[str, dict[str, int]] = {}
        for field, n in counts.items():
            status, model = field.decode().split(":", 1)
            if status in wanted and int(n) > 0:
                out.setdefault(model, {})[status] = int(n)
        return out

    @translated("oldest_waiting", ERRORS)
    async def oldest_waiting(self) -> dict[str, float]:
        """The oldest job at the head of each of a model's lines (one per priority, plus the
        jobs not yet due): three pipelined round trips, whatever the depth."""
        models = list(await self.depth(sorted(s.value for s in WAITING)))
        heads = await self._line_heads(models)
        async with self._c.r.pipeline(transaction=False) as pipe:
            for _, job_id in heads:
                pipe.hget(self._c.key("job", job_id), "created_at")
            created = await pipe.execute()
        out: dict[str, float] = {}
        for (model, _), at in zip(heads, created, strict=True):
            if at is not None:
                out[model] = min(float(at), out.get(model, float(at)))
        return out

    async def _line_heads(self, models: list[str]) -> list[tuple[str, str]]:
        """``(model, job id)`` at the head of each waiting line of ``models``."""
        async with self._c.r.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.zrange(self._c.key("prios", model), 0, -1)
                pipe.zrange(self._c.key("delayed", model), 0, 0)
            found = await pipe.execute()
        heads: list[tuple[str, str]] = []
        lines: list[str] = []
        async with self._c.r.pipeline(transaction=False) as pipe:
            for model, prios, delayed in zip(models, found[::2], found[1::2], strict=True):
                heads += [(model, i.decode()) for i in delayed]
                for prio in prios:
                    pipe.zrange(self._c.key("ready", model, prio.decode()), 0, 0)
                    lines.append(model)
            per_prio = await pipe.execute()
        for model, members in zip(lines, per_prio, strict=True):
            heads += [(model, m.decode()[16:]) for m in members]  # after sortable(available_at)
        return heads

    # -- outbox ------------------------------------------------------------------------------
    # The marks are a sorted set (job id by the time of its last write) that the scripts which
    # write a job add to once the epoch key exists (mark() in lua/_lib.lua). A server that
    # comes back without its data has no epoch key: it marks nothing until ``epoch`` names a
    # new one, which tells maintenance to put the store's active jobs back.

    @translated("epoch", ERRORS)
    async def epoch(self) -> str:
        key = self._c.key("epoch")
        async with self._c.r.pipeline(transaction=True) as pipe:
            pipe.set(key, uuid.uuid4().hex, nx=True)
            pipe.get(key)
            _, epoch = await pipe.execute()
        return cast(bytes, epoch).decode()

    @translated("pending", ERRORS)
    async def pending(self, before: float, limit: int) -> list[tuple[Job, float]]:
        key = self._c.key("outbox")
        reply = await self._c.r.zrangebyscore(key, "-inf", f"({num(before)}", 0, limit, True)
        marks = [(m.decode(), float(at)) for m, at in cast(list[tuple[bytes, float]], reply)]
        jobs = {j.id: j for j in await self.get_many([job_id for job_id, _ in marks])}
        gone = [job_id for job_id, _ in marks if job_id not in jobs]
        if gone:
            await self._c.r.zrem(key, *gone)
        return [(jobs[job_id], at) for job_id, at in marks if job_id in jobs]

    @translated("copied", ERRORS)
    async def copied(self, marks: Sequence[tuple[str, float]]) -> None:
        if marks:
            await self._c.run("copied", [x for job_id, at in marks for x in (job_id, num(at))])

    # -- store -------------------------------------------------------------------------------

    @translated("list", ERRORS)
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        filters = [str(v) if v is not None else "" for v in (flt.status, flt.model, flt.tenant)]
        found: list[Job] = []
        cursor = flt.before or ""
        while len(found) < flt.limit:
            args: list[str | int] = [cursor, flt.limit - len(found), self.SCAN_CHUNK, *filters]
            cursor_b, rows = await self._c.run("list", args)
            found += [row_to_job(r) for r in rows]
            if not cursor_b:
                break
            cursor = cursor_b.decode()
        return found

    @translated("put", ERRORS)
    async def put(self, jobs: Sequence[Job]) -> None:
        for start in range(0, len(jobs), self.ENQUEUE_CHUNK):
            chunk = jobs[start : start + self.ENQUEUE_CHUNK]
            args: list[str | bytes] = [num(time.time()), *map(record, chunk)]
            await self._c.run("put", args)

    # -- coordination ------------------------------------------------------------------------

    @translated("acquire_slot", ERRORS)
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        args: list[str | int] = [name, holder, limit, num(now), num(now + ttl_s)]
        return bool(await self._c.run("acquire_slot", args))

    @translated("release_slot", ERRORS)
    async def release_slot(self, name: str, holder: str) -> None:
        await self._c.r.zrem(self._c.key("slot", name), holder)

    @translated("reserve", ERRORS)
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        args = [key, num(now), num(cost), num(rate_per_s), num(burst)]
        return float(await self._c.run("reserve", args))

    @translated("server_time", ERRORS)
    async def server_time(self) -> float:
        seconds, micros = await self._c.r.time()
        return seconds + micros / 1e6

    # -- key-value ---------------------------------------------------------------------------

    @translated("kv_put", ERRORS)
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self._c.r.hset(self._c.key("kv", namespace), key, value)

    @translated("kv_get", ERRORS)
    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        return cast(bytes | None, await self._c.r.hget(self._c.key("kv", namespace), key))

    @translated("kv_list", ERRORS)
    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        found = cast(_Hash, await self._c.r.hgetall(self._c.key("kv", namespace)))
        return {k.decode(): found[k] for k in sorted(found)}

    @translated("kv_delete", ERRORS)
    async def kv_delete(self, namespace: str, key: str) -> bool:
        return bool(await self._c.r.hdel(self._c.key("kv", namespace), key))

    # -- routes ------------------------------------------------------------------------------

    @translated("route_put", ERRORS)
    async def route_put(self, name: str, doc: bytes) -> int:
        return int(await self._c.run("route_put", [name, doc]))

    @translated("route_get", ERRORS)
    async def route_get(self, name: str) -> bytes | None:
        return cast(bytes | None, await self._c.r.hget(self._c.key("routes"), name))

    @translated("route_list", ERRORS)
    async def route_list(self) -> dict[str, bytes]:
        found = cast(_Hash, await self._c.r.hgetall(self._c.key("routes")))
        return {k.decode(): found[k] for k in sorted(found)}

    @translated("route_delete", ERRORS)
    async def route_delete(self, name: str) -> bool:
        return bool(await self._c.run("route_delete", [name]))

    @translated("routes_revision", ERRORS)
    async def routes_revision(self) -> int:
        return int(await self._c.r.get(self._c.key("routes", "revision")) or 0)

    # -- signals -----------------------------------------------------------------------------

    @translated("broadcast", ERRORS)
    async def broadcast(self, payload: bytes) -> None:
        await self._c.r.publish(self._c.key("events"), payload)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        await follow(self._c, self._c.key("events"), deliver)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        """Wait for a PUBLISH on the work channel (or a local ``notify``); still at most
        ``poll_interval_s``, since a retry whose backoff ends is announced by nobody."""
        if self._work_listener is None and self._c.connected:
            channel = self._c.key("work")
            self._work_listener = asyncio.create_task(follow(self._c, channel, self._wake))
        await super().wait_for_work(model, timeout)

    def _wake(self, model: bytes) -> None:
        event = self._wakeups.get(model.decode())
        if event is not None:  # only models some lane of this process waits for
            event.set()
