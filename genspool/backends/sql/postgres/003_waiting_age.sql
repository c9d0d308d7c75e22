-- genspool schema for PostgreSQL, version 3: the age of the oldest waiting job, for load
-- shedding.
CREATE INDEX IF NOT EXISTS jobs_waiting_age ON jobs (model, created_at)
    WHERE status IN ('queued', 'retrying');
