"""The Redis backend: queue, job store, coordination, key-value and signals in one Redis server
(redis-py asyncio, hiredis, one connection pool).

Every state change is one Lua script (``backends/lua/*.lua``, run by EVALSHA), so it is atomic
on the server and costs one round trip whatever the batch size; reads of many jobs are one
pipeline. The scripts decide nothing: the core's state machine decides each transition, and
the statuses the scripts need (which ones wait, which one a lease writes) arrive in their
arguments. Every key starts with ``<prefix>:`` (``redis://host:port/db?prefix=name``, default
``genspool``), and ``destroy`` deletes exactly those keys.

Why not Redis Streams with consumer groups and XAUTOCLAIM: a stream cannot order by priority
and fair-share rank, hold a retry back until its ``available_at`` or drop a cancelled entry
cheaply, and the contract needs all three. So due jobs sit in one sorted set per (model,
priority) scored by ``rank``, each member being the job id behind its ``available_at`` encoded
to sort as a number (the tie-break), walked from the highest of the priorities present; jobs
not yet due wait in a sorted set per model by ``available_at`` that the lease script drains.
Leased jobs sit in a sorted set by ``lease_expires_at``, which ``stale_leases`` reads as
XAUTOCLAIM would.

Keys, after the prefix: ``job:<id>`` (hash), ``idem`` (hash of idempotency keys),
``prios:<model>``, ``ready:<model>:<priority>``, ``delayed:<model>``, ``leased``, ``expiring``
(waiting jobs by ``expires_at``, for ``overdue``), ``finished:<status>`` (ended jobs by
``finished_at``, for ``purge``), ``ids`` and ``ids:{status,model,tenant}:<value>`` (score-0
sorted sets of ids: job ids are time-ordered, so a reverse lexicographic range lists newest
first from a cursor), ``depth`` (counters per status and model), ``slot:<name>``,
``limit:<key>``, ``kv:<namespace>``, ``routes`` (hash of route name -> document) and
``routes:revision`` (its counter, moved on by the same script as each write). Channels:
``events`` (``broadcast``/``listen``) and ``work`` (the model name, published by the scripts
that make work ready, wakes ``wait_for_work``). ``lua/_lib.lua`` keeps every index in step
with a job's fields, in one function every writing script calls.

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

from genspool.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
