-- Named queries of the SQLite backend. Each starts with "-- name: <name>".
--
-- No status is spelled here. {columns} is the row layout of genspool/backends/_sql.py;
-- {waiting} and {statuses} become lists of status literals, written in by
-- genspool/backends/sqlite/backend.py from the statuses the core hands it (each checked to be a
-- JobStatus). Literals, not bound parameters: SQLite uses a partial index only when the query's
-- IN list is the index's own, value for value and in the same order. A lone status is a bound
-- parameter (`status = ?` still matches an index's `WHERE status = 'running'`).

-- name: insert
INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                  idempotency_key, metadata, expires_at, created_at, available_at, rank)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;

-- name: by_idempotency_key
SELECT {columns} FROM jobs WHERE tenant = ? AND idempotency_key = ?;

-- name: lease
UPDATE jobs
   SET status = :running, lease_token = :token, lease_expires_at = :until,
       attempts = attempts + :step, started_at = :now, worker = :worker
 WHERE seq IN (SELECT seq FROM jobs
                WHERE model = :model AND status IN ({waiting})
                  AND available_at <= :now
                  AND (expires_at IS NULL OR expires_at > :now)
                ORDER BY priority DESC, rank, available_at
                LIMIT :limit)
RETURNING {columns};

-- name: extend
UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_token = ? AND status = ?;

-- name: write
-- Every field a transition may change (genspool/core/machine.py), on condition that the stored
-- job is still the one the change was decided on (the fence).
UPDATE jobs
   SET status = ?, attempts = ?, available_at = ?, started_at = ?, retried_at = ?,
       finished_at = ?, lease_token = ?, lease_expires_at = ?, result = ?, error = ?,
       history = ?, expires_at = ?
 WHERE id = ? AND status = ? AND lease_token IS ?;

-- name: fence
-- The stored state changes are decided on; {ids} is one "?" per id.
SELECT id, status, lease_token FROM jobs WHERE id IN ({ids});

-- name: stale_leases
SELECT {columns} FROM jobs
 WHERE status = ? AND lease_expires_at < ?
 ORDER BY lease_expires_at LIMIT ?;

-- name: overdue
SELECT {columns} FROM jobs
 WHERE status IN ({waiting}) AND expires_at IS NOT NULL AND expires_at <= ?
 ORDER BY expires_at LIMIT ?;

-- name: purge
DELETE FROM jobs WHERE status IN ({statuses}) AND finished_at < ?;

-- name: oldest_waiting
SELECT model, min(created_at) FROM jobs WHERE status IN ({waiting}) GROUP BY model;

-- name: depth
SELECT model, status, count(*) FROM jobs WHERE status IN ({statuses}) GROUP BY model, status;

-- name: slot_prune
DELETE FROM slots WHERE name = ? AND expires_at <= ?;

-- name: slot_renew
UPDATE slots SET expires_at = ? WHERE name = ? AND holder = ?;

-- name: slot_count
SELECT count(*) FROM slots WHERE name = ?;

-- name: slot_take
INSERT INTO slots (name, holder, expires_at) VALUES (?, ?, ?);

-- name: slot_release
DELETE FROM slots WHERE name = ? AND holder = ?;

-- name: limit_get
SELECT tat FROM limits WHERE key = ?;

-- name: limit_set
INSERT INTO limits (key, tat) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat;

-- name: kv_put
INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value;

-- name: kv_get
SELECT value FROM kv WHERE namespace = ? AND key = ?;

-- name: kv_list
SELECT key, value FROM kv WHERE namespace = ? ORDER BY key;

-- name: kv_delete
DELETE FROM kv WHERE namespace = ? AND key = ?;

-- name: route_put
INSERT INTO routes (name, doc) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET doc = excluded.doc;

-- name: route_get
SELECT doc FROM routes WHERE name = ?;

-- name: route_list
SELECT name, doc FROM routes ORDER BY name;

-- name: route_delete
DELETE FROM routes WHERE name = ?;

-- name: routes_bump
-- In the transaction of the write it counts, so a reader never sees one without the other.
UPDATE routes_revision SET revision = revision + 1 RETURNING revision;

-- name: routes_revision
SELECT revision FROM routes_revision;

-- name: put
-- The whole record of a job, as the queue that changed it holds it.
INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                  idempotency_key, metadata, expires_at, created_at, available_at, started_at,
                  retried_at, finished_at, lease_token, lease_expires_at, result, error, rank,
                  worker, history)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts,
    available_at = excluded.available_at, started_at = excluded.started_at,
    retried_at = excluded.retried_at, finished_at = excluded.finished_at,
    lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at,
    result = excluded.result, error = excluded.error, rank = excluded.rank,
    worker = excluded.worker, history = excluded.history, expires_at = excluded.expires_at;
