-- Named queries of the PostgreSQL backend's WebhookStore role
-- (genspool/backends/postgres/_webhooks.py). A tenant of NULL reaches every tenant's.

-- name: webhook_put
INSERT INTO webhooks (id, tenant, doc) VALUES (%(id)s, %(tenant)s, %(doc)s);

-- name: webhook_get
SELECT doc FROM webhooks
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: webhook_list
SELECT doc FROM webhooks
 WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text) ORDER BY id;

-- name: webhook_delete
DELETE FROM webhooks
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);
