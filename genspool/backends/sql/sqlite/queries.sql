-- Named queries of the SQLite backend. Each starts with "-- name: <name>".

-- name: insert
INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                  idempotency_key, metadata, expires_at, created_at, available_at, rank)
VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;

-- name: by_idempotency_key
SELECT {columns} FROM jobs WHERE tenant = ? AND idempotency_key = ?;

-- name: lease
UPDATE jobs
   SET status = 'running', lease_token = :token, lease_expires_at = :until,
       attempts = attempts + 1, started_at = :now
 WHERE seq IN (SELECT seq FROM jobs
                WHERE model = :model AND status IN ('queued', 'retrying')
                  AND available_at <= :now
                  AND (expires_at IS NULL OR expires_at > :now)
                ORDER BY priority DESC, rank, available_at
                LIMIT :limit)
RETURNING {columns};

-- name: extend
UPDATE jobs SET lease_expires_at = ?
 WHERE id = ? AND lease_token = ? AND status = 'running';

-- name: held
SELECT id, lease_token FROM jobs WHERE status = 'running' AND id IN ({ids});

-- name: succeed
UPDATE jobs
   SET status = 'succeeded', result = ?, finished_at = ?, lease_token = NULL,
       lease_expires_at = NULL
 WHERE id = ?;

-- name: finish
UPDATE jobs
   SET status = :status, result = :result, error = :error,
       attempts = attempts - (:status = 'queued'),
       available_at = coalesce(:available_at, available_at),
       retried_at = CASE WHEN :status = 'retrying' THEN :now ELSE retried_at END,
       finished_at = CASE WHEN :status IN ('queued', 'retrying') THEN NULL ELSE :now END,
       lease_token = NULL, lease_expires_at = NULL
 WHERE id = :id;

-- name: expired_leases
SELECT {columns} FROM jobs
 WHERE status = 'running' AND lease_expires_at < ?
 ORDER BY lease_expires_at LIMIT ?;

-- name: cancel
UPDATE jobs
   SET status = 'cancelled', finished_at = ?, lease_token = NULL, lease_expires_at = NULL
 WHERE id = ? AND status IN ('queued', 'retrying', 'running')
RETURNING {columns};

-- name: replay
UPDATE jobs
   SET status = 'queued', attempts = 0, result = NULL, error = NULL, available_at = ?,
       finished_at = NULL, retried_at = NULL
 WHERE id = ? AND status = 'failed'
RETURNING {columns};

-- name: expire
UPDATE jobs SET status = 'expired', finished_at = :now,
       error = '{"code": "expired", "message": "not started before expires_at"}'
 WHERE status IN ('queued', 'retrying') AND expires_at IS NOT NULL AND expires_at <= :now
RETURNING {columns};

-- name: purge
DELETE FROM jobs WHERE status IN ('succeeded', 'cancelled', 'expired') AND finished_at < ?;

-- name: oldest_waiting
SELECT model, min(created_at) FROM jobs WHERE status IN ('queued', 'retrying') GROUP BY model;

-- name: depth
SELECT model, status, count(*) FROM jobs
 WHERE status IN ('queued', 'retrying', 'running') GROUP BY model, status;

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

-- name: put
-- The whole record of a job, as another backend (the queue of a split deployment) holds it.
INSERT INTO jobs (id, tenant, url, model, body, status, priority, attempts, max_attempts,
                  idempotency_key, metadata, expires_at, created_at, available_at, started_at,
                  retried_at, finished_at, lease_token, lease_expires_at, result, error, rank)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts,
    available_at = excluded.available_at, started_at = excluded.started_at,
    retried_at = excluded.retried_at, finished_at = excluded.finished_at,
    lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at,
    result = excluded.result, error = excluded.error, rank = excluded.rank;
