-- Named queries of the SQLite backend's BatchStore role (genspool/backends/sqlite/_batches.py).
-- A tenant of NULL reaches every tenant's batches (an admin). A list is written by
-- genspool/backends/_records.py's page_query.

-- name: batch_put
INSERT INTO batches (id, tenant, active, version, doc)
VALUES (:id, :tenant, :active, :version, :doc);

-- name: batch_get
SELECT doc FROM batches WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: batch_update
UPDATE batches SET active = :active, version = :next, doc = :doc
 WHERE id = :id AND version = :version;

-- name: batches_active
SELECT doc FROM batches WHERE active = 1 ORDER BY id LIMIT :limit;
