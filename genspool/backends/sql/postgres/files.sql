-- Named queries of the PostgreSQL backend's FileStore role (genspool/backends/postgres/_files.py)
-- and of its blob store (genspool/files/postgres.py). {file_columns} is the row layout of
-- genspool/backends/_files.py. A tenant of NULL reaches every tenant's files (an admin).

-- name: file_put
INSERT INTO files ({file_columns})
VALUES (%(id)s, %(tenant)s, %(filename)s, %(purpose)s, %(bytes)s, %(sha256)s, %(created_at)s,
        %(expires_at)s, %(blob)s, %(status)s);

-- name: file_get
SELECT {file_columns} FROM files
 WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);

-- name: file_delete
DELETE FROM files WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
RETURNING {file_columns};

-- name: files_expired
SELECT {file_columns} FROM files
 WHERE expires_at IS NOT NULL AND expires_at <= %(now)s
 ORDER BY expires_at, id LIMIT %(limit)s;

-- name: chunk_put
INSERT INTO blob_chunks (key, seq, data, created_at)
VALUES (%(key)s, %(seq)s, %(data)s, extract(epoch FROM clock_timestamp()));

-- name: chunk_get
SELECT data FROM blob_chunks WHERE key = %(key)s AND seq = %(seq)s;

-- name: chunk_count
SELECT count(*) FROM blob_chunks WHERE key = %(key)s;

-- name: blob_rename
-- A commit: every chunk of the temporary key becomes the blob's, in one statement.
UPDATE blob_chunks SET key = %(key)s WHERE key = %(part)s;

-- name: blob_delete
DELETE FROM blob_chunks WHERE key = %(key)s;

-- name: blob_sweep
-- Parts of uploads abandoned by a process that died: temporary keys older than the bound.
DELETE FROM blob_chunks WHERE key LIKE '%%.part-%%' AND created_at < %(before)s;
