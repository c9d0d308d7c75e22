"""The Redis backend: queue, job store and coordination in one Redis server (redis-py asyncio,
hiredis, one connection pool).

Every state change is one Lua script (``backends/lua/*.lua``, run by EVALSHA), so it is atomic
on the server and costs one round trip whatever the batch size; reads of many jobs are one
pipeline. Every key starts with ``<prefix>:`` (``redis://host:port/db?prefix=name``, default
``genspool``), and ``destroy`` deletes exactly those keys.

Why not Redis Streams with consumer groups and XAUTOCLAIM: a stream cannot order by priority
and fair-share rank, hold a retry back until its ``available_at`` or drop a cancelled entry
cheaply, and the contract needs all three. So due jobs sit in one sorted set per (model,
priority) scored by ``rank``, each member being the job id behind its ``available_at`` encoded
to sort as a number (the tie-break), walked from the highest of the priorities present; jobs
not yet due wait in a sorted set per model by ``available_at`` that the lease script drains.
Running jobs sit in a sorted set by ``lease_expires_at``, which ``expired_leases`` reads as
XAUTOCLAIM would.

Keys, after the prefix: ``job:<id>`` (hash), ``idem`` (hash of idempotency keys),
``prios:<model>``, ``ready:<model>:<priority>``, ``delayed:<model>``, ``leased``, ``expiring``
(waiting jobs by ``expires_at``), ``finished`` (ended jobs by ``finished_at``, for ``purge``;
dead letters are not in it and stay), ``ids`` and ``ids:{status,model,tenant}:<value>``
(score-0 sorted sets of ids: job ids are time-ordered, so a reverse lexicographic range lists
newest first from a cursor), ``depth`` (counters per status and model), ``slot:<name>``,
``limit:<key>``, ``kv:<namespace>``. Channels: ``events`` (``broadcast``/``listen``) and
``work`` (the model name, published by the scripts that make work ready, wakes
``wait_for_work``).

Limits: the scripts build their keys from the prefix, so this runs on one Redis server or a
replicated primary, not on Redis Cluster. Durability is the server's: jobs survive a restart
of Redis only with its AOF or RDB persistence on. A batch of more than ``ENQUEUE_CHUNK`` jobs is
stored in several script calls (each atomic), not all-or-nothing. Enqueueing a job whose id is
already stored yields the stored job (as a matching idempotency key does), so a call retried
after a lost reply stores nothing twice. redis-py retries a call whose connection broke
(twice, quickly); should that repeat a lease whose reply was lost, those jobs come back when
their lease runs out, as a crashed worker's do.

Recovery: while the server is down every call raises BackendError (in about a second when
connections are refused); afterwards the pool reconnects, scripts are loaded again on NOSCRIPT,
and both subscriptions resubscribe by themselves with a capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from genspool.backends.base import Backend, JobFilter
from genspool.core.job import Job, JobStatus, Outcome
from genspool.exceptions import BackendError

__all__ = ["RedisBackend"]

log = logging.getLogger("genspool.backends.redis")

#: The order of a job's fields in every script reply (FIELDS in ``lua/_lib.lua``).
FIELDS = (
    "id", "tenant", "url", "model", "body", "status", "priority", "attempts", "max_attempts",
    "idempotency_key", "metadata", "expires_at", "created_at", "available_at", "started_at",
    "retried_at", "finished_at", "lease_token", "lease_expires_at", "result", "error", "rank",
)  # fmt: skip
SCRIPTS = (
    "enqueue", "lease", "extend", "finish", "expired_leases", "cancel", "replay", "expire",
    "purge", "list", "acquire_slot", "reserve",
)  # fmt: skip
#: What the client returns for a hash: it never decodes responses.
_Hash = dict[bytes, bytes]
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+")


def _load_scripts() -> dict[str, str]:
    root = resources.files("genspool.backends") / "lua"
    lib = (root / "_lib.lua").read_text()
    return {name: f"{lib}\n{(root / f'{name}.lua').read_text()}" for name in SCRIPTS}


def _num(x: float) -> str:
    """A float as Redis and Lua read it back bit for bit (repr is the shortest exact form)."""
    return repr(float(x))


def _opt(value: Any) -> Any:
    return None if value is None else float(value)


def row_to_job(v: Sequence[Any]) -> Job:
    """A job from the field values of a script reply or HMGET, in ``FIELDS`` order."""
    return Job(
        id=v[0].decode(),
        tenant=v[1].decode(),
        url=v[2].decode(),
        model=v[3].decode(),
        body=orjson.loads(v[4]),
        status=JobStatus(v[5].decode()),
        priority=int(v[6]),
        attempts=int(v[7]),
        max_attempts=int(v[8]),
        idempotency_key=None if v[9] is None else v[9].decode(),
        metadata=orjson.loads(v[10]) if v[10] else {},
        expires_at=_opt(v[11]),
        created_at=float(v[12]),
        available_at=float(v[13]),
        started_at=_opt(v[14]),
        retried_at=_opt(v[15]),
        finished_at=_opt(v[16]),
        lease_token=None if v[17] is None else v[17].decode(),
        lease_expires_at=_opt(v[18]),
        result=None if v[19] is None else orjson.loads(v[19]),
        error=None if v[20] is None else orjson.loads(v[20]),
        rank=float(v[21]),
    )


def _job_arg(j: Job) -> bytes:
    """The ``enqueue`` argument of one job: its hash fields as one JSON object of strings (one
    argument per job, not one per field, since redis-py encodes each argument in Python)."""
    fields = {
        "id": j.id,
        "tenant": j.tenant,
        "url": j.url,
        "model": j.model,
        "body": orjson.dumps(j.body).decode(),
        "status": "queued",
        "priority": str(int(j.priority)),
        "attempts": "0",
        "max_attempts": str(int(j.max_attempts)),
        "created_at": _num(j.created_at),
        "available_at": _num(j.available_at or j.created_at),
        "rank": _num(j.rank),
    }
    if j.idempotency_key is not None:
        fields["idempotency_key"] = j.idempotency_key
    if j.metadata:
        fields["metadata"] = orjson.dumps(j.metadata).decode()
    if j.expires_at is not None:
        fields["expires_at"] = _num(j.expires_at)
    return orjson.dumps(fields)


def _json(value: Any) -> bytes:
    return b"" if value is None else orjson.dumps(value)


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, for a one-line message."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class RedisBackend(Backend):
    cross_process_events = True
    #: Jobs per ``enqueue`` script call: a bigger batch is stored in several calls so that one
    #: call never holds the (single-threaded) server for long.
    ENQUEUE_CHUNK = 500
    #: Entries one ``expire``/``purge``/``list`` call looks at, for the same reason.
    SCAN_CHUNK = 1000
    #: Reconnection delays of the subscriptions (doubled per failure, jittered).
    RECONNECT_MIN_S, RECONNECT_MAX_S = 0.05, 2.0

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "genspool") -> None:
        super().__init__()
        if not _PREFIX.fullmatch(prefix):
            # No ':' (one prefix must not contain another's keys) and no glob characters
            # (destroy finds the keys with SCAN MATCH).
            raise BackendError(f"Redis prefix {prefix!r} must be letters, digits, '_', '.', '-'")
        self.url, self.prefix = url, prefix
        self._shown = _mask(f"{url}{'&' if '?' in url else '?'}prefix={prefix}")
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._work_listener: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """``redis://[user:password@]host:port/db?prefix=name`` (or ``rediss://``); the other
        query parameters go to redis-py."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = next((v for k, v in query if k == "prefix"), "genspool") or "genspool"
        rest = urlencode([(k, v) for k, v in query if k != "prefix"])
        if parts.scheme in ("redis", "rediss") and not re.fullmatch(r"/?\d*", parts.path):
            # redis-py would quietly use database 0 for a path that is not a number
            raise BackendError(
                f"invalid Redis URL {_mask(url)}: the path must be a database number, like /0"
            )
        return cls(urlunsplit(parts._replace(query=rest)), prefix=prefix)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._client is not None:
            return
        try:
            client = redis.asyncio.Redis.from_url(
                self.url,
                socket_connect_timeout=5.0,
                socket_timeout=10.0,
                socket_keepalive=True,
                health_check_interval=15,
                # A few quick retries ride out a dropped connection; a server that stays down
                # fails the call within about a second, as BackendError, and the caller retries.
                retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 2),
            )
        except ValueError as exc:
            raise BackendError(f"invalid Redis URL {self._shown}: {_reason(exc)}") from exc
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise BackendError(f"cannot connect to Redis at {self._shown}: {_reason(exc)}") from exc
        self._scripts = {name: client.register_script(src) for name, src in _load_scripts().items()}
        self._client = client

    async def close(self) -> None:
        if self._work_listener is not None:
            self._work_listener.cancel()
            await asyncio.gather(self._work_listener, return_exceptions=True)
            self._work_listener = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def _r(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise BackendError(f"Redis backend {self._shown} is not connected")
        return self._client

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Turn a driver error into one line naming the server and the operation."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise BackendError(f"Redis {what} failed at {self._shown}: {_reason(exc)}") from exc

    async def _run(self, script: str, args: Sequence[str | bytes | int]) -> Any:
        client = self._r
        with self._failing(script):
            return await self._scripts[script](args=[self.prefix, *args], client=client)

    async def destroy(self) -> None:
        with self._failing("destroy"):
            # SCAN + UNLINK of our prefix only: other applications may share the database.
            cursor = 0
            while True:
                cursor, keys = await self._r.scan(cursor, match=self._k("*"), count=1000)
                if keys:
                    await self._r.unlink(*keys)
                if cursor == 0:
                    break

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        out: list[Job] = []
        for start in range(0, len(jobs), self.ENQUEUE_CHUNK):
            chunk = jobs[start : start + self.ENQUEUE_CHUNK]
            replies = await self._run("enqueue", [_job_arg(j) for j in chunk])
            out += [j if r == 0 else row_to_job(r) for j, r in zip(chunk, replies, strict=True)]
        for model in {j.model for j in jobs}:
            self.notify(model)  # this process's lanes at once; others hear the PUBLISH
        return out

    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        token = os.urandom(8).hex()
        args: list[str | int] = [model, limit, _num(now), _num(now + lease_s), token]
        return [row_to_job(r) for r in await self._run("lease", args)]

    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        if not jobs:
            return 0
        n: int = await self._run("extend", [_num(until), *(x for pair in jobs for x in pair)])
        return n

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        if not outcomes:
            return set()
        last = {o.job_id: o for o in outcomes}  # as in SQLite, the last outcome of a job wins
        args: list[str | bytes] = [_num(now)]
        for o in last.values():
            at = "" if o.available_at is None else _num(o.available_at)
            args += [o.job_id, o.lease_token, o.status.value, _json(o.result), _json(o.error), at]
        return {i.decode() for i in await self._run("finish", args)}

    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        return [row_to_job(r) for r in await self._run("expired_leases", [_num(now), limit])]

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        with self._failing("get"):
            async with self._r.pipeline(transaction=False) as pipe:
                for job_id in dict.fromkeys(job_ids):  # once each, as SQL's IN
                    pipe.hmget(self._k("job", job_id), FIELDS)
                rows = await pipe.execute()
        return [row_to_job(r) for r in rows if r[0] is not None]

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        filters = [str(v) if v is not None else "" for v in (flt.status, flt.model, flt.tenant)]
        found: list[Job] = []
        cursor = flt.before or ""
        while len(found) < flt.limit:
            args: list[str | int] = [cursor, flt.limit - len(found), self.SCAN_CHUNK, *filters]
            cursor_b, rows = await self._run("list", args)
            found += [row_to_job(r) for r in rows]
            if not cursor_b:
                break
            cursor = cursor_b.decode()
        return found

    async def cancel(self, job_id: str, now: float) -> Job | None:
        row = await self._run("cancel", [job_id, _num(now)])
        return None if row is None else row_to_job(row)

    async def replay(self, job_id: str, now: float) -> Job | None:
        row = await self._run("replay", [job_id, _num(now)])
        return None if row is None else row_to_job(row)

    async def expire(self, now: float) -> list[Job]:
        out: list[Job] = []
        while True:
            seen, rows = await self._run("expire", [_num(now), self.SCAN_CHUNK])
            out += [row_to_job(r) for r in rows]
            if seen < self.SCAN_CHUNK:
                return out

    async def purge(self, finished_before: float) -> int:
        total = 0
        while True:
            seen, purged = await self._run("purge", [_num(finished_before), self.SCAN_CHUNK])
            total += int(purged)
            if seen < self.SCAN_CHUNK:
                return total

    async def depth(self) -> dict[str, dict[str, int]]:
        with self._failing("depth"):
            counts = cast(_Hash, await self._r.hgetall(self._k("depth")))
        out: dict[str, dict[str, int]] = {}
        for field, n in counts.items():
            status, model = field.decode().split(":", 1)
            if int(n) > 0:
                out.setdefault(model, {})[status] = int(n)
        return out

    async def oldest_waiting(self) -> dict[str, float]:
        """The oldest job at the head of each of a model's lines (one per priority, plus the
        retries waiting out a backoff): two pipelined round trips, whatever the depth."""
        models = list(await self.depth())
        with self._failing("oldest_waiting"):
            async with self._r.pipeline(transaction=False) as pipe:
                for model in models:
                    pipe.zrange(self._k("prios", model), 0, -1)
                    pipe.zrange(self._k("delayed", model), 0, 0)
                found = await pipe.execute()
            heads: list[tuple[str, str]] = []
            async with self._r.pipeline(transaction=False) as pipe:
                for model, prios, delayed in zip(models, found[::2], found[1::2], strict=True):
                    heads += [(model, i.decode()) for i in delayed]
                    for prio in prios:
                        pipe.zrange(self._k("ready", model, prio.decode()), 0, 0)
                per_prio = await pipe.execute()
            prio_models = [m for m, prios in zip(models, found[::2], strict=True) for _ in prios]
            for model, members in zip(prio_models, per_prio, strict=True):
                heads += [(model, m.decode()[16:]) for m in members]  # after sortable(avail.)
            async with self._r.pipeline(transaction=False) as pipe:
                for _, job_id in heads:
                    pipe.hget(self._k("job", job_id), "created_at")
                created = await pipe.execute()
        out: dict[str, float] = {}
        for (model, _), at in zip(heads, created, strict=True):
            if at is not None:
                out[model] = min(float(at), out.get(model, float(at)))
        return out

    # -- coordination ------------------------------------------------------------------------

    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        args: list[str | int] = [name, holder, limit, _num(now), _num(now + ttl_s)]
        return bool(await self._run("acquire_slot", args))

    async def release_slot(self, name: str, holder: str) -> None:
        with self._failing("release_slot"):
            await self._r.zrem(self._k("slot", name), holder)

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        args = [key, _num(now), _num(cost), _num(rate_per_s), _num(burst)]
        return float(await self._run("reserve", args))

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        with self._failing("kv_put"):
            await self._r.hset(self._k("kv", namespace), key, value)

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        with self._failing("kv_get"):
            return cast(bytes | None, await self._r.hget(self._k("kv", namespace), key))

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        with self._failing("kv_list"):
            found = cast(_Hash, await self._r.hgetall(self._k("kv", namespace)))
        return {k.decode(): found[k] for k in sorted(found)}

    async def kv_delete(self, namespace: str, key: str) -> bool:
        with self._failing("kv_delete"):
            return bool(await self._r.hdel(self._k("kv", namespace), key))

    # -- events and wake-ups -----------------------------------------------------------------

    async def broadcast(self, payload: bytes) -> None:
        with self._failing("broadcast"):
            await self._r.publish(self._k("events"), payload)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        await self._follow(self._k("events"), deliver)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        """Wait for a PUBLISH on the work channel (or a local ``notify``); still at most
        ``poll_interval_s``, since a retry whose backoff ends is announced by nobody."""
        if self._work_listener is None and self._client is not None:
            self._work_listener = asyncio.create_task(self._follow(self._k("work"), self._wake))
        await super().wait_for_work(model, timeout)

    def _wake(self, model: bytes) -> None:
        event = self._wakeups.get(model.decode())
        if event is not None:  # only models some lane of this process waits for
            event.set()

    async def _follow(self, channel: str, deliver: Callable[[bytes], None]) -> None:
        """Call ``deliver`` with every message on ``channel`` until cancelled, on a connection
        of its own; resubscribe after a failure with a capped, jittered exponential backoff."""
        delay = self.RECONNECT_MIN_S
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = self._r.pubsub()
                await pubsub.subscribe(channel)
                if _cancelling():  # redis-py swallows a cancellation that came while connecting
                    raise asyncio.CancelledError
                while True:
                    # The timeout makes the loop come back now and then, so the connection's
                    # health check PINGs a server that went away without closing the socket.
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        if _cancelling():  # redis-py can turn a cancellation into a timeout
                            raise asyncio.CancelledError
                        continue
                    if message["type"] == "subscribe":
                        delay = self.RECONNECT_MIN_S
                    elif message["type"] == "message":
                        self._deliver(deliver, message["data"])
            except (RedisError, OSError, BackendError) as exc:
                log.warning(
                    "Redis subscription to %s lost (%s); resubscribing in %.2f s",
                    channel, _reason(exc), delay,
                )  # fmt: skip
                if _cancelling():
                    raise asyncio.CancelledError from exc
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.RECONNECT_MAX_S)

    @staticmethod
    def _deliver(deliver: Callable[[bytes], None], data: bytes) -> None:
        try:
            deliver(data)
        except Exception:  # a malformed message must not end the subscription
            log.exception("dropping a message the subscriber could not handle")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
