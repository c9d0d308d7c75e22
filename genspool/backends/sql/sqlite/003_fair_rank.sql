-- genspool schema for SQLite, version 3: jobs are leased by (priority, rank), where the rank
-- gives tenants a fair share (genspool/core/fairness.py).
ALTER TABLE jobs ADD COLUMN rank REAL NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS jobs_ready;
CREATE INDEX jobs_ready ON jobs (model, priority DESC, rank, available_at)
    WHERE status IN ('queued', 'retrying');
