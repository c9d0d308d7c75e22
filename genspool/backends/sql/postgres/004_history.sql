-- genspool schema for PostgreSQL, version 4: the worker that holds (or last held) a job's
-- lease, and the history of its attempts (orjson bytes, NULL until an attempt ended:
-- genspool/core/job.py).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS worker text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS history bytea;
