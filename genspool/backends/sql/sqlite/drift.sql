-- Named queries of the SQLite backend's DriftSamples role (genspool/backends/sqlite/_drift.py).

-- name: drift_put
INSERT OR IGNORE INTO drift_samples
    (id, model, at, prompt_chars, output_chars, embed_model, embedding, tenant)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: drift_list
SELECT id, model, at, prompt_chars, output_chars, embed_model, embedding, tenant
  FROM drift_samples
 WHERE model = :model AND at >= :start AND at < :end
 ORDER BY at DESC, id DESC LIMIT :limit;

-- name: drift_models
SELECT DISTINCT model FROM drift_samples ORDER BY model;

-- name: drift_purge
DELETE FROM drift_samples WHERE at < :before;
