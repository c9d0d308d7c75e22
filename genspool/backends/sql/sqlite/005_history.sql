-- genspool schema for SQLite, version 5: the worker that holds (or last held) a job's lease,
-- and the history of its attempts (JSON, NULL until an attempt ended: genspool/core/job.py).
ALTER TABLE jobs ADD COLUMN worker TEXT;
ALTER TABLE jobs ADD COLUMN history BLOB;
