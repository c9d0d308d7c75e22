-- Named queries of the SQLite backend's PipelineStore role
-- (genspool/backends/sqlite/_pipelines.py). A tenant of NULL reaches every tenant's runs. A
-- list of runs is written by genspool/backends/_records.py's page_query.

-- name: run_put
INSERT INTO runs (id, tenant, pipeline, key, active, version, doc)
VALUES (:id, :tenant, :pipeline, :key, :active, :version, :doc)
ON CONFLICT (tenant, pipeline, key) DO NOTHING;

-- name: run_of_key
SELECT doc FROM runs WHERE tenant = :tenant AND pipeline = :pipeline AND key = :key;

-- name: run_get
SELECT doc FROM runs WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: run_update
UPDATE runs SET active = :active, version = :next, doc = :doc
 WHERE id = :id AND version = :version;

-- name: runs_active
SELECT doc FROM runs WHERE active = 1 ORDER BY id LIMIT :limit;

-- name: items_put
-- An item takes its run's tenant and pipeline; one of no stored run is not kept. (The WHERE
-- also tells SQLite's parser that ON CONFLICT is the upsert's, not a join's.)
INSERT INTO run_items (run_id, key, seq, tenant, pipeline, status, doc)
SELECT id, :key, :seq, tenant, pipeline, :status, :doc FROM runs WHERE id = :run_id
ON CONFLICT (run_id, key) DO UPDATE
   SET seq = excluded.seq, status = excluded.status, doc = excluded.doc;

-- name: items_list
SELECT key, seq, doc FROM run_items
 WHERE run_id = :run_id AND seq > :after_seq AND (:status IS NULL OR status = :status)
 ORDER BY seq LIMIT :limit;

-- name: items_finished
-- {keys} is a list of as many ? as the chunk of keys has.
SELECT run_id, key, seq, doc FROM run_items
 WHERE tenant = ? AND pipeline = ? AND status IN (?, ?) AND key IN ({keys});

-- name: tick_record
INSERT INTO ticks (pipeline, at, outcome, recorded_at, run_id)
VALUES (:pipeline, :at, :outcome, :recorded_at, :run_id)
ON CONFLICT (pipeline, at) DO NOTHING;

-- name: tick_get
SELECT pipeline, at, outcome, recorded_at, run_id FROM ticks
 WHERE pipeline = :pipeline AND at = :at;

-- name: ticks_list
SELECT pipeline, at, outcome, recorded_at, run_id FROM ticks
 WHERE pipeline = :pipeline AND (:before IS NULL OR at < :before)
 ORDER BY at DESC LIMIT :limit;
