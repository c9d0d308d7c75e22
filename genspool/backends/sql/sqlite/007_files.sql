-- genspool schema for SQLite, version 7: the records of files (genspool/files/). Their bytes
-- are in a blob store (by default a directory beside this file), at the URL in ``blob``.
-- Ids are "file-" and a hex that grows with time, so lists page by id.
CREATE TABLE IF NOT EXISTS files (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    blob       TEXT NOT NULL,
    status     TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, id);
CREATE INDEX IF NOT EXISTS files_expiring ON files (expires_at) WHERE expires_at IS NOT NULL;
