-- genspool schema for PostgreSQL, version 1: the jobs.
-- Runs with search_path set to the backend's schema, so no name here is qualified.
-- Times are unix seconds (double precision, as the queue facade computes them); JSON payloads
-- are orjson bytes in bytea: the server never parses them and they come back bit for bit.
-- Keys are compared bytewise (COLLATE "C"): ids sort in submission order whatever the
-- database's locale (cursor pagination relies on it), and comparisons are cheaper.
CREATE TABLE jobs (
    id               text COLLATE "C" PRIMARY KEY,
    tenant           text COLLATE "C" NOT NULL,
    url              text NOT NULL,
    model            text COLLATE "C" NOT NULL,
    body             bytea NOT NULL,
    status           text COLLATE "C" NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    idempotency_key  text COLLATE "C",
    metadata         bytea,
    expires_at       double precision,
    created_at       double precision NOT NULL,
    available_at     double precision NOT NULL,
    started_at       double precision,
    retried_at       double precision,
    finished_at      double precision,
    lease_token      text COLLATE "C",
    lease_expires_at double precision,
    result           bytea,
    error            bytea,
    -- order among waiting jobs of equal priority: tenants' fair share (core/fairness.py)
    rank             double precision NOT NULL DEFAULT 0
);

-- Ready jobs, in the order a lease takes them (the lease query's ORDER BY, same predicate).
CREATE INDEX jobs_ready ON jobs (model, priority DESC, rank, available_at)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_expiring ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'retrying');
CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE status IN ('succeeded', 'cancelled', 'expired');
CREATE INDEX jobs_dead ON jobs (id) WHERE status = 'failed';
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
