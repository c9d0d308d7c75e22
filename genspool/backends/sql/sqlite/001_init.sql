-- genspool schema for SQLite, version 1.
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    url              TEXT NOT NULL,
    model            TEXT NOT NULL,
    body             BLOB NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    idempotency_key  TEXT,
    metadata         BLOB,
    expires_at       REAL,
    created_at       REAL NOT NULL,
    available_at     REAL NOT NULL,
    started_at       REAL,
    retried_at       REAL,
    finished_at      REAL,
    lease_token      TEXT,
    lease_expires_at REAL,
    result           BLOB,
    error            BLOB
);

-- Ready jobs, in the order a lease takes them.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (model, priority DESC, available_at)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at)
    WHERE status IN ('succeeded', 'cancelled', 'expired');
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (id) WHERE status = 'failed';
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
