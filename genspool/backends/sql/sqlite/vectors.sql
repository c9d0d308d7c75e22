-- Named queries of the SQLite backend's VectorStoreRecords and ChunkStore roles
-- (genspool/backends/sqlite/_vectors.py). A tenant of NULL reaches every tenant's records. A
-- list of stores or files is written by genspool/backends/_records.py's page_query.

-- name: store_put
INSERT INTO vector_stores (id, tenant, version, doc) VALUES (:id, :tenant, :version, :doc);

-- name: store_get
SELECT doc FROM vector_stores WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: store_update
UPDATE vector_stores SET version = :next, doc = :doc WHERE id = :id AND version = :version;

-- name: store_delete
DELETE FROM vector_stores WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: store_files_delete
DELETE FROM vector_files WHERE store_id = :id;

-- name: vfile_put
INSERT INTO vector_files (store_id, id, tenant, status, version, doc)
VALUES (:store_id, :id, :tenant, :status, :version, :doc)
ON CONFLICT (store_id, id) DO NOTHING;

-- name: vfile_get
SELECT doc FROM vector_files
 WHERE store_id = :store_id AND id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: vfile_update
UPDATE vector_files SET status = :status, version = :next, doc = :doc
 WHERE store_id = :store_id AND id = :id AND version = :version;

-- name: vfile_delete
DELETE FROM vector_files
 WHERE store_id = :store_id AND id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: chunks_put
INSERT INTO chunks (store_id, file_id, seq, generation, text, start_offset, end_offset, tokens,
                    page, headings, attributes, vector)
VALUES (:store_id, :file_id, :seq, :generation, :text, :start_offset, :end_offset, :tokens,
        :page, :headings, :attributes, :vector)
ON CONFLICT (store_id, file_id, seq, generation) DO UPDATE
   SET text = excluded.text, start_offset = excluded.start_offset,
       end_offset = excluded.end_offset, tokens = excluded.tokens, page = excluded.page,
       headings = excluded.headings, attributes = excluded.attributes, vector = excluded.vector;

-- name: head_put
INSERT INTO chunk_heads (store_id, file_id, generation) VALUES (:store_id, :file_id, :generation)
ON CONFLICT (store_id, file_id) DO UPDATE SET generation = excluded.generation;

-- name: chunks_retire
DELETE FROM chunks
 WHERE store_id = :store_id AND file_id = :file_id AND generation <> :generation;

-- name: chunks_drop_file
DELETE FROM chunks WHERE store_id = :store_id AND file_id = :file_id;

-- name: heads_drop_file
DELETE FROM chunk_heads WHERE store_id = :store_id AND file_id = :file_id;

-- name: chunks_drop_store
DELETE FROM chunks WHERE store_id = :store_id;

-- name: heads_drop_store
DELETE FROM chunk_heads WHERE store_id = :store_id;

-- name: revision_bump
-- In the transaction of the change it counts, so a reader never sees one without the other.
INSERT INTO chunk_revisions (store_id, revision) VALUES (:store_id, 1)
ON CONFLICT (store_id) DO UPDATE SET revision = revision + 1
RETURNING revision;

-- name: chunks_revision
SELECT revision FROM chunk_revisions WHERE store_id = :store_id;

-- name: chunks_current
-- Walks the key (store_id, file_id, seq, ...) in order from the cursor; the join keeps a
-- file's current generation.
SELECT c.store_id, c.file_id, c.generation, c.seq, c.text, c.start_offset, c.end_offset,
       c.tokens, c.vector, c.page, c.headings, c.attributes
  FROM chunks c
  JOIN chunk_heads h
    ON h.store_id = c.store_id AND h.file_id = c.file_id AND h.generation = c.generation
 WHERE c.store_id = :store_id AND (c.file_id, c.seq) > (:file_id, :seq)
 ORDER BY c.file_id, c.seq LIMIT :limit;

-- name: chunks_get
-- {keys} is a list of as many (?, ?) as the chunk of keys has, then the store's id: the keys
-- lead, each one lookup of the key (``IN`` read the whole store).
WITH k (file_id, seq) AS (VALUES {keys})
SELECT c.store_id, c.file_id, c.generation, c.seq, c.text, c.start_offset, c.end_offset,
       c.tokens, c.vector, c.page, c.headings, c.attributes
  FROM k
  JOIN chunk_heads h ON h.file_id = k.file_id
  JOIN chunks c
    ON c.store_id = h.store_id AND c.file_id = h.file_id AND c.seq = k.seq
   AND c.generation = h.generation
 WHERE h.store_id = ?;

-- name: cache_get
-- {keys} is a list of as many ? as the chunk of keys has.
SELECT key, vector FROM embedding_cache WHERE model = ? AND dimensions = ? AND key IN ({keys});

-- name: cache_put
INSERT INTO embedding_cache (model, dimensions, key, vector)
VALUES (:model, :dimensions, :key, :vector)
ON CONFLICT (model, dimensions, key) DO NOTHING;
