-- Named queries of the PostgreSQL backend's BatchStore role
-- (genspool/backends/postgres/_batches.py). A tenant of NULL reaches every tenant's batches. A
-- list is written by genspool/backends/_records.py's page_query.

-- name: batch_put
INSERT INTO batches (id, tenant, active, version, doc)
VALUES (%(id)s, %(tenant)s, %(active)s, %(version)s, %(doc)s);

-- name: batch_get
SELECT doc FROM batches
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: batch_update
UPDATE batches SET active = %(active)s, version = %(next)s, doc = %(doc)s
 WHERE id = %(id)s AND version = %(version)s;

-- name: batches_active
SELECT doc FROM batches WHERE active ORDER BY id LIMIT %(limit)s;
