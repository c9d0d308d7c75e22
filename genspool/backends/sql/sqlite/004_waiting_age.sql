-- genspool schema for SQLite, version 4: the age of the oldest waiting job, for load shedding.
CREATE INDEX IF NOT EXISTS jobs_waiting_age ON jobs (model, created_at)
    WHERE status IN ('queued', 'retrying');
