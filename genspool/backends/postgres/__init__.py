"""The PostgreSQL backend: every storage role (queue, store, coordination, key-value, signals)
in one schema of a database (``?schema=``, default ``genspool``).

The schema holds tables made by the numbered files in ``sql/postgres/``, applied in order and
recorded in ``schema_version`` under an advisory lock, so processes that start together do not
race. Modules: :mod:`._pool` (URL, pool, migrations), :mod:`._signals` (LISTEN/NOTIFY),
:mod:`.backend` (the roles' methods).

Design choices:

* psycopg 3 async with a small :class:`~psycopg_pool.AsyncConnectionPool` of autocommit
  connections. Every hot path (``enqueue``, ``lease``, ``extend``, ``apply``) is ONE
  statement, hence one round trip whatever the batch size: batches travel as arrays that
  ``unnest`` takes apart. ``lease`` is ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
  LOCKED)`` over a partial index in the lease order; ``apply`` writes the decided records of
  :mod:`genspool.core.machine`, fenced by the status and lease token each was decided on, in
  the same statement. No status is spelled in SQL: the core's sets arrive as parameters.
* ``search_path`` is set at connection startup (``options=-c search_path=...``), so the SQL
  files name no schema and a new connection costs no extra round trip.
* Timestamps are unix seconds in ``double precision``, as the facade computes them. JSON
  payloads are orjson bytes in ``bytea``: the server never parses them and they come back bit
  for bit.
* Events and wake-ups ride LISTEN/NOTIFY on two channels named after the schema, received by
  one dedicated connection that reconnects by itself.
* Work wake-ups: after a write that makes jobs ready (enqueue, an ``apply`` that re-queues or
  replays) commits, a second statement notifies the work channel with ``"<earliest
  available_at> <model>"``, so an idle worker elsewhere wakes at once, or when a retry backoff
  ends. Not in the writing transaction on purpose: NOTIFY takes a database-wide lock at
  commit, held across that commit's WAL flush, which would serialise every enqueue; a
  transaction that only notifies writes no WAL and commits at once.
* A pooled connection the server closed while idle (a restart) is noticed by one ``poll()``
  before use and replaced, so the first call after the server is back already works; calls
  made while it is down fail with a one-line :class:`~genspool.exceptions.BackendError`.
* Slots are a plpgsql function under an advisory lock (one round trip). Rate-limit buckets run
  :func:`~genspool.core.gcra.gcra` in Python and write with a compare-and-set, so the
  arithmetic lives in one place.

Limits: a schema name is ``[A-Za-z_][A-Za-z0-9_]*``, at most 50 characters (channel names
must fit PostgreSQL's 63). ``enqueue`` costs two round trips (insert, then the wake-up), as
does an ``apply`` that re-queues jobs. Startup ``options`` are not accepted by some poolers
(PgBouncer without ``ignore_startup_parameters``), and neither are prepared statements in its
transaction mode. Stored broadcasts are deleted by ``purge`` after ``EVENTS_KEEP_S``. Commits
wait for the WAL flush: ``options=-c synchronous_commit=off`` in the URL trades the last
moments before a server crash for throughput.
"""

from genspool.backends.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
