-- Named queries of the PostgreSQL backend's VectorStoreRecords and ChunkStore roles
-- (genspool/backends/postgres/_vectors.py). A tenant of NULL reaches every tenant's records. A
-- list of stores or files is written by genspool/backends/_records.py's page_query. Each call
-- is one statement, so a change and what goes with it (a store's files, a flip's retired
-- chunks, the revision) commit together without a transaction held across round trips.

-- name: store_put
INSERT INTO vector_stores (id, tenant, version, doc)
VALUES (%(id)s, %(tenant)s, %(version)s, %(doc)s);

-- name: store_get
SELECT doc FROM vector_stores
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: store_update
UPDATE vector_stores SET version = %(next)s, doc = %(doc)s
 WHERE id = %(id)s AND version = %(version)s;

-- name: store_delete
WITH gone AS (
    DELETE FROM vector_stores
     WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
    RETURNING id
), files AS (
    DELETE FROM vector_files WHERE store_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone;

-- name: vfile_put
INSERT INTO vector_files (store_id, id, tenant, status, version, doc)
VALUES (%(store_id)s, %(id)s, %(tenant)s, %(status)s, %(version)s, %(doc)s)
ON CONFLICT (store_id, id) DO NOTHING;

-- name: vfile_get
SELECT doc FROM vector_files
 WHERE store_id = %(store_id)s AND id = %(id)s
   AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: vfile_update
UPDATE vector_files SET status = %(status)s, version = %(next)s, doc = %(doc)s
 WHERE store_id = %(store_id)s AND id = %(id)s AND version = %(version)s;

-- name: vfile_delete
DELETE FROM vector_files
 WHERE store_id = %(store_id)s AND id = %(id)s
   AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: chunks_put
-- One statement for any number of chunks, as parallel arrays.
INSERT INTO chunks (store_id, file_id, seq, generation, text, start_offset, end_offset, tokens,
                    page, headings, attributes, vector)
SELECT store_id, file_id, seq, generation, text, start_offset, end_offset, tokens, page,
       headings::jsonb, attributes::jsonb, vector
  FROM unnest(%(store_id)b::text[], %(file_id)b::text[], %(seq)b::bigint[],
              %(generation)b::bigint[], %(text)b::text[], %(start_offset)b::bigint[],
              %(end_offset)b::bigint[], %(tokens)b::bigint[], %(page)b::bigint[],
              %(headings)b::text[], %(attributes)b::text[], %(vector)b::bytea[])
       AS c (store_id, file_id, seq, generation, text, start_offset, end_offset, tokens, page,
             headings, attributes, vector)
ON CONFLICT (store_id, file_id, seq, generation) DO UPDATE
   SET text = excluded.text, start_offset = excluded.start_offset,
       end_offset = excluded.end_offset, tokens = excluded.tokens, page = excluded.page,
       headings = excluded.headings, attributes = excluded.attributes, vector = excluded.vector;

-- name: chunks_flip
WITH head AS (
    INSERT INTO chunk_heads (store_id, file_id, generation)
    VALUES (%(store_id)s, %(file_id)s, %(generation)s)
    ON CONFLICT (store_id, file_id) DO UPDATE SET generation = excluded.generation
), retired AS (
    DELETE FROM chunks
     WHERE store_id = %(store_id)s AND file_id = %(file_id)s AND generation <> %(generation)s
)
INSERT INTO chunk_revisions (store_id, revision) VALUES (%(store_id)s, 1)
ON CONFLICT (store_id) DO UPDATE SET revision = chunk_revisions.revision + 1
RETURNING revision;

-- name: chunks_drop_file
WITH gone AS (
    DELETE FROM chunks WHERE store_id = %(store_id)s AND file_id = %(file_id)s::text
), heads AS (
    DELETE FROM chunk_heads WHERE store_id = %(store_id)s AND file_id = %(file_id)s::text
)
INSERT INTO chunk_revisions (store_id, revision) VALUES (%(store_id)s, 1)
ON CONFLICT (store_id) DO UPDATE SET revision = chunk_revisions.revision + 1
RETURNING revision;

-- name: chunks_drop_store
WITH gone AS (
    DELETE FROM chunks WHERE store_id = %(store_id)s
), heads AS (
    DELETE FROM chunk_heads WHERE store_id = %(store_id)s
)
INSERT INTO chunk_revisions (store_id, revision) VALUES (%(store_id)s, 1)
ON CONFLICT (store_id) DO UPDATE SET revision = chunk_revisions.revision + 1
RETURNING revision;

-- name: chunks_revision
SELECT revision FROM chunk_revisions WHERE store_id = %(store_id)s;

-- name: chunks_current
-- Walks the key (store_id, file_id, seq, ...) in order from the cursor; the join keeps a
-- file's current generation.
SELECT c.store_id, c.file_id, c.generation, c.seq, c.text, c.start_offset, c.end_offset,
       c.tokens, c.vector, c.page, c.headings::text, c.attributes::text
  FROM chunks c
  JOIN chunk_heads h
    ON h.store_id = c.store_id AND h.file_id = c.file_id AND h.generation = c.generation
 WHERE c.store_id = %(store_id)s AND (c.file_id, c.seq) > (%(file_id)s::text, %(seq)s::bigint)
 ORDER BY c.file_id, c.seq LIMIT %(limit)s;

-- name: chunks_get
-- In the order of the keys asked.
SELECT c.store_id, c.file_id, c.generation, c.seq, c.text, c.start_offset, c.end_offset,
       c.tokens, c.vector, c.page, c.headings::text, c.attributes::text
  FROM unnest(%(file_id)s::text[], %(seq)s::bigint[]) WITH ORDINALITY AS k (file_id, seq, n)
  JOIN chunk_heads h ON h.store_id = %(store_id)s AND h.file_id = k.file_id
  JOIN chunks c
    ON c.store_id = h.store_id AND c.file_id = h.file_id AND c.seq = k.seq
   AND c.generation = h.generation
 ORDER BY k.n;

-- name: cache_get
SELECT key, vector FROM embedding_cache
 WHERE model = %(model)s AND dimensions = %(dimensions)s AND key = ANY(%(keys)s::text[]);

-- name: cache_put
INSERT INTO embedding_cache (model, dimensions, key, vector)
SELECT %(model)s, %(dimensions)s, key, vector
  FROM unnest(%(key)b::text[], %(vector)b::bytea[]) AS c (key, vector)
ON CONFLICT (model, dimensions, key) DO NOTHING;
