"""The NATS backend: jobs in a JetStream key-value bucket, work and timers in JetStream streams.

URL: ``nats://[user:password@]host:port?prefix=name`` (prefix ``genspool`` by default). Every
object lives under the prefix: KV buckets ``<prefix>_jobs`` (job id -> orjson record),
``<prefix>_idem`` (tenant + idempotency key -> job id), ``<prefix>_coord`` (slots, rate
limits, small values), ``<prefix>_marks`` (the outbox of a queue with a separate store) and
``<prefix>_routes`` (the fan-out routes; its stream's sequence is their revision);
streams ``<prefix>_work`` and ``<prefix>_timers`` with their durable
pull consumers; core subjects ``<prefix>.events`` and ``<prefix>.wake``.

The parts:

* :mod:`._client`: the connection (reconnecting forever) and the JetStream primitives;
* :mod:`._records`: the job records, the compare-and-set every change goes through, and the
  notices (work messages, timers) published before each write;
* :mod:`.lanes` (pure) and :mod:`._work`: submitting, and leasing over per-tenant lanes;
* :mod:`.timers` (pure) and :mod:`._sweep`: lease, expiry and purge timers, one sweep;
* :mod:`._marks`: the outbox's marks, written before each queue write of a split deployment;
* :mod:`._routes`: the fan-out routes;
* :mod:`._codec`: records, tokens and subjects;
* :mod:`.backend`: :class:`NatsBackend`, every storage role.

**The record is the truth.** :mod:`genspool.core.machine` decides every transition; ``apply``
writes each decided job by compare-and-set on its record's revision, if the stored job still
has the (status, lease token) the decision was made on. What the issue sketched but does not
fit this contract: JetStream's ``max_deliver`` does not dead-letter (the facade does), and a
message is not held un-acked for the whole lease with ``in_progress`` heartbeats (a lease
length is per call here, a consumer's ``ack_wait`` is fixed, and a reclaim must go through the
facade).

**Limits.** ``list_jobs``, ``depth`` and ``oldest_waiting`` scan the jobs bucket and cost
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
"""

from genspool.backends.nats.backend import NatsBackend

__all__ = ["NatsBackend"]
