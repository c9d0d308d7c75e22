"""The embedded backend (``sqlite:///path.db``): every storage role in one SQLite file (WAL).

Modules: :mod:`._conn` (a connection per thread, the migrations of ``sql/sqlite/``),
:mod:`.backend` (the roles' methods; the queries are in ``sql/sqlite/queries.sql``).

Design choices:

* Each operation is one transaction run as a plain function on a dedicated thread that owns
  the writer's connection, so it costs one hop between the event loop and that thread however
  many rows it touches. Reads go through a second connection on a second thread and never wait
  behind writes (WAL lets them read a snapshot).
* Several processes may share the file: ``BEGIN IMMEDIATE`` plus a busy timeout serialises
  their writers. Idle workers find jobs another process enqueued by polling
  (``Signals.poll_interval_s``); events do not cross processes (subscribers poll the store).
* ``apply`` writes every decided change with one fenced ``executemany`` when every fence
  holds (the bulk of the traffic); only when one failed does it read the fences to learn which.
* No status is spelled in SQL: the core's sets are written into the queries as literals (so
  that SQLite's planner still matches the partial indexes) and single statuses are bound.
* ``?synchronous=FULL`` makes each commit durable against a power loss; the default NORMAL
  (WAL) survives a crash of the process but may lose the last commits on a power loss.
"""

from genspool.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
