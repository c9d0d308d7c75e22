-- Named queries of the PostgreSQL backend. Each starts with "-- name: <name>".
-- Placeholders are psycopg's %(name)s. Batches travel as arrays taken apart by unnest(), so a
-- batch of any size is one statement and one round trip. No status is spelled here: the
-- statuses a query reads or writes arrive as parameters, decided in genspool.core.machine.

-- name: insert
INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                  idempotency_key, metadata, expires_at, created_at, available_at, rank)
SELECT id, tenant, url, model, body, status, priority, attempts, max_attempts,
       idempotency_key, metadata, expires_at, created_at, available_at, rank
  FROM unnest(%(id)b::text[], %(tenant)b::text[], %(url)b::text[], %(model)b::text[],
              %(body)b::bytea[], %(status)b::text[], %(priority)b::integer[],
              %(attempts)b::integer[], %(max_attempts)b::integer[],
              %(idempotency_key)b::text[], %(metadata)b::bytea[],
              %(expires_at)b::float8[], %(created_at)b::float8[], %(available_at)b::float8[],
              %(rank)b::float8[])
       AS i (id, tenant, url, model, body, status, priority, attempts, max_attempts,
             idempotency_key, metadata, expires_at, created_at, available_at, rank);

-- name: insert_keyed
-- One row per input job, in input order: whether it was inserted, else the stored job that
-- holds its key. A statement does not see its own inserts, so a key taken by an earlier job of
-- the same batch comes back as all NULLs and the caller resolves it within the batch.
WITH input AS (
    SELECT *
      FROM unnest(%(id)b::text[], %(tenant)b::text[], %(url)b::text[], %(model)b::text[],
                  %(body)b::bytea[], %(status)b::text[], %(priority)b::integer[],
                  %(attempts)b::integer[], %(max_attempts)b::integer[],
                  %(idempotency_key)b::text[], %(metadata)b::bytea[],
                  %(expires_at)b::float8[], %(created_at)b::float8[],
                  %(available_at)b::float8[], %(rank)b::float8[])
           WITH ORDINALITY
           AS i (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                 idempotency_key, metadata, expires_at, created_at, available_at, rank, ord)
), ins AS (
    INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                      idempotency_key, metadata, expires_at, created_at, available_at, rank)
    SELECT id, tenant, url, model, body, status, priority, attempts, max_attempts,
           idempotency_key, metadata, expires_at, created_at, available_at, rank
      FROM input
     ORDER BY ord
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT ins.id IS NOT NULL, {jcolumns}
  FROM input
  LEFT JOIN ins ON ins.id = input.id
  LEFT JOIN jobs j ON ins.id IS NULL AND j.tenant = input.tenant
                  AND j.idempotency_key = input.idempotency_key
 ORDER BY input.ord;

-- name: by_idempotency_key
SELECT {columns} FROM jobs WHERE tenant = %(tenant)s AND idempotency_key = %(key)s;

-- name: lease
-- SKIP LOCKED: concurrent leasers pass over each other's rows instead of queueing on them.
-- Sent unprepared, so it is planned with the waiting statuses in hand: only then can the
-- planner use the partial index jobs_ready (a generic plan scans and sorts the whole table).
UPDATE jobs
   SET status = %(running)s, lease_token = %(token)s, lease_expires_at = %(until)s,
       attempts = attempts + %(attempts_step)s, started_at = %(now)s, worker = %(worker)s
 WHERE id IN (SELECT id FROM jobs
               WHERE model = %(model)s AND status = ANY(%(waiting)s::text[])
                 AND available_at <= %(now)s
                 AND (expires_at IS NULL OR expires_at > %(now)s)
               ORDER BY priority DESC, rank, available_at
               LIMIT %(limit)s
                 FOR UPDATE SKIP LOCKED)
RETURNING {columns};

-- name: extend
UPDATE jobs SET lease_expires_at = %(until)s
  FROM unnest(%(id)s::text[], %(token)s::text[]) AS held (id, token)
 WHERE jobs.id = held.id AND jobs.lease_token = held.token AND jobs.status = %(running)s;

-- name: stale_leases
SELECT {columns} FROM jobs
 WHERE status = %(running)s AND lease_expires_at < %(now)s
 ORDER BY lease_expires_at LIMIT %(limit)s;

-- name: overdue
SELECT {columns} FROM jobs
 WHERE status = ANY(%(waiting)s::text[]) AND expires_at IS NOT NULL AND expires_at <= %(now)s
 ORDER BY expires_at LIMIT %(limit)s;

-- name: get_many
SELECT {columns} FROM jobs WHERE id = ANY(%(ids)s::text[]);

-- name: purge
-- Stored broadcasts go too: by then every listener has long read them.
WITH old_events AS (DELETE FROM events WHERE created_at < %(events_before)s)
DELETE FROM jobs WHERE status = ANY(%(statuses)s::text[]) AND finished_at < %(before)s;

-- name: oldest_waiting
SELECT model, min(created_at) FROM jobs WHERE status = ANY(%(waiting)s::text[]) GROUP BY model;

-- name: depth
SELECT model, status, count(*) FROM jobs
 WHERE status = ANY(%(statuses)s::text[]) GROUP BY model, status;

-- name: slot_acquire
SELECT acquire_slot(%(name)s, %(holder)s, %(limit)s, %(until)s, %(now)s);

-- name: slot_release
DELETE FROM slots WHERE name = %(name)s AND holder = %(holder)s;

-- name: server_time
-- clock_timestamp(), not now(): now() is the start of the transaction.
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: limit_get
SELECT tat FROM limits WHERE key = %(key)s;

-- name: limit_insert
INSERT INTO limits (key, tat) VALUES (%(key)s, %(tat)s) ON CONFLICT (key) DO NOTHING;

-- name: limit_swap
-- Compare and set: applies only if no other process moved the bucket since it was read.
UPDATE limits SET tat = %(tat)s WHERE key = %(key)s AND tat = %(old)s;

-- name: kv_put
INSERT INTO kv (namespace, key, value) VALUES (%(namespace)s, %(key)s, %(value)s)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value;

-- name: kv_get
SELECT value FROM kv WHERE namespace = %(namespace)s AND key = %(key)s;

-- name: kv_list
SELECT key, value FROM kv WHERE namespace = %(namespace)s ORDER BY key;

-- name: kv_delete
DELETE FROM kv WHERE namespace = %(namespace)s AND key = %(key)s;

-- name: route_put
-- One statement: the route and the revision it makes are committed together.
WITH put AS (
    INSERT INTO routes (name, doc) VALUES (%(name)s, %(doc)s)
    ON CONFLICT (name) DO UPDATE SET doc = excluded.doc
)
UPDATE routes_revision SET revision = revision + 1 RETURNING revision;

-- name: route_get
SELECT doc FROM routes WHERE name = %(name)s;

-- name: route_list
SELECT name, doc FROM routes ORDER BY name COLLATE "C";

-- name: route_delete
-- A row back (the new revision) only when the route existed.
WITH gone AS (DELETE FROM routes WHERE name = %(name)s RETURNING 1)
UPDATE routes_revision SET revision = revision + 1 WHERE EXISTS (SELECT FROM gone)
RETURNING revision;

-- name: routes_clear
WITH gone AS (DELETE FROM routes)
UPDATE routes_revision SET revision = revision + 1;

-- name: routes_revision
SELECT revision FROM routes_revision;

-- name: wake
-- Wake-ups go out after the write committed, in a transaction of their own: a NOTIFY takes a
-- database-wide lock at commit, and in the writing transaction it would hold that lock across
-- the WAL flush, serialising every enqueue. Alone it writes no WAL, so its commit is instant.
SELECT count(pg_notify(%(work)s, payload)) FROM unnest(%(payloads)s::text[]) AS payload;

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: event_store
WITH stored AS (
    INSERT INTO events (payload, created_at) VALUES (%(payload)s, %(now)s) RETURNING id
)
SELECT pg_notify(%(channel)s, '#' || id) FROM stored;

-- name: event_get
SELECT payload FROM events WHERE id = %(id)s;

-- name: schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at double precision NOT NULL
);

-- name: current_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: record_version
INSERT INTO schema_version (version, applied_at) VALUES (%(version)s, %(now)s);

-- name: migration_lock
-- Held until the migrating transaction ends: a second process starting at the same moment
-- waits here, then finds the schema already at the latest version.
SELECT pg_advisory_xact_lock(hashtextextended('genspool.migrate:' || %(schema)s, 0));

-- name: put
-- Whole records, as another backend (the queue of a split deployment) holds them; a batch is
-- one statement. Ids are unique within a batch (ON CONFLICT cannot touch a row twice).
INSERT INTO jobs ({columns})
SELECT *
  FROM unnest(%(id)s::text[], %(tenant)s::text[], %(url)s::text[], %(model)s::text[],
              %(body)s::bytea[], %(status)s::text[], %(priority)s::integer[],
              %(attempts)s::integer[], %(max_attempts)s::integer[],
              %(idempotency_key)s::text[], %(metadata)s::bytea[], %(expires_at)s::float8[],
              %(created_at)s::float8[], %(available_at)s::float8[], %(started_at)s::float8[],
              %(retried_at)s::float8[], %(finished_at)s::float8[], %(lease_token)s::text[],
              %(lease_expires_at)s::float8[], %(result)s::bytea[], %(error)s::bytea[],
              %(rank)s::float8[], %(worker)s::text[], %(history)s::bytea[])
ON CONFLICT (id) DO UPDATE SET
    tenant = excluded.tenant, url = excluded.url, model = excluded.model, body = excluded.body,
    status = excluded.status, priority = excluded.priority, attempts = excluded.attempts,
    max_attempts = excluded.max_attempts, idempotency_key = excluded.idempotency_key,
    metadata = excluded.metadata, expires_at = excluded.expires_at,
    created_at = excluded.created_at, available_at = excluded.available_at,
    started_at = excluded.started_at, retried_at = excluded.retried_at,
    finished_at = excluded.finished_at, lease_token = excluded.lease_token,
    lease_expires_at = excluded.lease_expires_at, result = excluded.result,
    error = excluded.error, rank = excluded.rank, worker = excluded.worker,
    history = excluded.history;
