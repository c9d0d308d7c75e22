-- Named queries of the SQLite backend's FileStore role (genspool/backends/sqlite/_files.py).
-- {file_columns} is the row layout of genspool/backends/_files.py. A tenant of NULL reaches
-- every tenant's files (an admin).

-- name: file_put
INSERT INTO files ({file_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: file_get
SELECT {file_columns} FROM files WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: file_delete
DELETE FROM files WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant)
RETURNING {file_columns};

-- name: files_expired
SELECT {file_columns} FROM files
 WHERE expires_at IS NOT NULL AND expires_at <= ?
 ORDER BY expires_at, id LIMIT ?;
