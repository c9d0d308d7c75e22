-- Named queries of the PostgreSQL backend's DriftSamples role
-- (genspool/backends/postgres/_drift.py).

-- name: drift_put
-- Every sample of a call in one statement: one array per column, unnested into rows.
INSERT INTO drift_samples
    (id, model, at, prompt_chars, output_chars, embed_model, embedding, tenant)
SELECT * FROM unnest(
    %(id)s::text[], %(model)s::text[], %(at)s::double precision[], %(prompt_chars)s::integer[],
    %(output_chars)s::integer[], %(embed_model)s::text[], %(embedding)s::bytea[],
    %(tenant)s::text[])
ON CONFLICT (id) DO NOTHING;

-- name: drift_list
SELECT id, model, at, prompt_chars, output_chars, embed_model, embedding, tenant
  FROM drift_samples
 WHERE model = %(model)s AND at >= %(start)s AND at < %(end)s
 ORDER BY at DESC, id DESC LIMIT %(limit)s;

-- name: drift_models
SELECT DISTINCT model FROM drift_samples ORDER BY model;

-- name: drift_purge
DELETE FROM drift_samples WHERE at < %(before)s;
