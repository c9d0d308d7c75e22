-- Named queries of the PostgreSQL backend's PromptStore role
-- (genspool/backends/postgres/_prompts.py). Each write stores its audit entry in the same
-- statement (a data-modifying CTE): its count is 1 when the change was made, 0 when not.

-- name: prompt_put
WITH put AS (
    INSERT INTO prompt_versions (tenant, prompt_id, version, doc)
    VALUES (%(tenant)s, %(prompt_id)s, %(version)s, %(doc)s)
    ON CONFLICT DO NOTHING RETURNING 1
)
INSERT INTO prompt_audit (id, tenant, prompt_id, doc)
SELECT %(audit_id)s, %(tenant)s, %(prompt_id)s, %(adoc)s FROM put;

-- name: prompt_get
SELECT doc FROM prompt_versions
 WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s::integer)
 ORDER BY version DESC LIMIT 1;

-- name: prompt_versions
SELECT doc FROM prompt_versions
 WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s
   AND (%(before)s::integer IS NULL OR version < %(before)s::integer)
 ORDER BY version DESC LIMIT %(limit)s;

-- name: prompt_list
SELECT DISTINCT ON (prompt_id) doc FROM prompt_versions
 WHERE tenant = %(tenant)s AND prompt_id > %(after)s
 ORDER BY prompt_id, version DESC LIMIT %(limit)s;

-- name: label_get
SELECT label, doc FROM prompt_labels
 WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s AND label = %(label)s;

-- name: label_list
SELECT label, doc FROM prompt_labels
 WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s ORDER BY label;

-- name: label_create
WITH put AS (
    INSERT INTO prompt_labels (tenant, prompt_id, label, revision, doc)
    VALUES (%(tenant)s, %(prompt_id)s, %(label)s, %(revision)s, %(ldoc)s)
    ON CONFLICT DO NOTHING RETURNING 1
)
INSERT INTO prompt_audit (id, tenant, prompt_id, doc)
SELECT %(audit_id)s, %(tenant)s, %(prompt_id)s, %(adoc)s FROM put;

-- name: label_move
WITH put AS (
    UPDATE prompt_labels SET revision = %(revision)s, doc = %(ldoc)s
     WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s AND label = %(label)s
       AND revision = %(expected)s
    RETURNING 1
)
INSERT INTO prompt_audit (id, tenant, prompt_id, doc)
SELECT %(audit_id)s, %(tenant)s, %(prompt_id)s, %(adoc)s FROM put;

-- name: audit_list
SELECT id, doc FROM prompt_audit
 WHERE tenant = %(tenant)s AND prompt_id = %(prompt_id)s AND id > %(after)s
 ORDER BY id LIMIT %(limit)s;
