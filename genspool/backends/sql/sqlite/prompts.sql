-- Named queries of the SQLite backend's PromptStore role (genspool/backends/sqlite/_prompts.py).
-- A write and its audit entry run in one transaction (the role's code runs both).

-- name: prompt_put
INSERT INTO prompt_versions (tenant, prompt_id, version, doc)
VALUES (:tenant, :prompt_id, :version, :doc)
ON CONFLICT DO NOTHING;

-- name: prompt_get
SELECT doc FROM prompt_versions
 WHERE tenant = :tenant AND prompt_id = :prompt_id AND (:version IS NULL OR version = :version)
 ORDER BY version DESC LIMIT 1;

-- name: prompt_versions
SELECT doc FROM prompt_versions
 WHERE tenant = :tenant AND prompt_id = :prompt_id AND (:before IS NULL OR version < :before)
 ORDER BY version DESC LIMIT :limit;

-- name: prompt_list
-- SQLite's bare column with max(): doc is the row of the highest version of each prompt.
SELECT doc, max(version) FROM prompt_versions
 WHERE tenant = :tenant AND prompt_id > :after
 GROUP BY prompt_id ORDER BY prompt_id LIMIT :limit;

-- name: label_get
SELECT label, doc FROM prompt_labels
 WHERE tenant = :tenant AND prompt_id = :prompt_id AND label = :label;

-- name: label_list
SELECT label, doc FROM prompt_labels
 WHERE tenant = :tenant AND prompt_id = :prompt_id ORDER BY label;

-- name: label_create
INSERT INTO prompt_labels (tenant, prompt_id, label, revision, doc)
VALUES (:tenant, :prompt_id, :label, :revision, :ldoc)
ON CONFLICT DO NOTHING;

-- name: label_move
UPDATE prompt_labels SET revision = :revision, doc = :ldoc
 WHERE tenant = :tenant AND prompt_id = :prompt_id AND label = :label AND revision = :expected;

-- name: audit_put
INSERT INTO prompt_audit (id, tenant, prompt_id, doc) VALUES (:audit_id, :tenant, :prompt_id, :adoc);

-- name: audit_list
SELECT id, doc FROM prompt_audit
 WHERE tenant = :tenant AND prompt_id = :prompt_id AND id > :after
 ORDER BY id LIMIT :limit;
