-- Named queries of the PostgreSQL backend's PipelineStore role
-- (genspool/backends/postgres/_pipelines.py). A tenant of NULL reaches every tenant's runs. A
-- list of runs is written by genspool/backends/_records.py's page_query.

-- name: run_put
INSERT INTO runs (id, tenant, pipeline, key, active, version, doc)
VALUES (%(id)s, %(tenant)s, %(pipeline)s, %(key)s, %(active)s, %(version)s, %(doc)s)
ON CONFLICT (tenant, pipeline, key) DO NOTHING;

-- name: run_of_key
SELECT doc FROM runs
 WHERE tenant = %(tenant)s AND pipeline = %(pipeline)s AND key = %(key)s::text;

-- name: run_get
SELECT doc FROM runs
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: run_update
UPDATE runs SET active = %(active)s, version = %(next)s, doc = %(doc)s
 WHERE id = %(id)s AND version = %(version)s;

-- name: runs_active
SELECT doc FROM runs WHERE active ORDER BY id LIMIT %(limit)s;

-- name: items_put
-- One statement for any number of items, as parallel arrays; an item takes its run's tenant
-- and pipeline, and one of no stored run is not kept.
INSERT INTO run_items (run_id, key, seq, tenant, pipeline, status, doc)
SELECT c.run_id, c.key, c.seq, r.tenant, r.pipeline, c.status, c.doc
  FROM unnest(%(run_id)b::text[], %(key)b::text[], %(seq)b::bigint[], %(status)b::text[],
              %(doc)b::bytea[]) AS c (run_id, key, seq, status, doc)
  JOIN runs r ON r.id = c.run_id
ON CONFLICT (run_id, key) DO UPDATE
   SET seq = excluded.seq, status = excluded.status, doc = excluded.doc;

-- name: items_list
SELECT key, seq, doc FROM run_items
 WHERE run_id = %(run_id)s AND seq > %(after_seq)s
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
 ORDER BY seq LIMIT %(limit)s;

-- name: items_finished
-- The item of the latest run (highest id) that finished each key.
SELECT DISTINCT ON (key) run_id, key, seq, doc FROM run_items
 WHERE tenant = %(tenant)s AND pipeline = %(pipeline)s AND status = ANY(%(finished)s::text[])
   AND key = ANY(%(keys)s::text[])
 ORDER BY key, run_id DESC;

-- name: tick_record
INSERT INTO ticks (pipeline, at, outcome, recorded_at, run_id)
VALUES (%(pipeline)s, %(at)s, %(outcome)s, %(recorded_at)s, %(run_id)s)
ON CONFLICT (pipeline, at) DO NOTHING;

-- name: tick_get
SELECT pipeline, at, outcome, recorded_at, run_id FROM ticks
 WHERE pipeline = %(pipeline)s AND at = %(at)s;

-- name: ticks_list
SELECT pipeline, at, outcome, recorded_at, run_id FROM ticks
 WHERE pipeline = %(pipeline)s AND (%(before)s::float8 IS NULL OR at < %(before)s::float8)
 ORDER BY at DESC LIMIT %(limit)s;
