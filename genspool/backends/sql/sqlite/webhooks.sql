-- Named queries of the SQLite backend's WebhookStore role (genspool/backends/sqlite/_webhooks.py).
-- A tenant of NULL reaches every tenant's subscriptions (an admin, or a process's cache).

-- name: webhook_put
INSERT INTO webhooks (id, tenant, doc) VALUES (?, ?, ?);

-- name: webhook_get
SELECT doc FROM webhooks WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: webhook_list
SELECT doc FROM webhooks WHERE (:tenant IS NULL OR tenant = :tenant) ORDER BY id;

-- name: webhook_delete
DELETE FROM webhooks WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);
