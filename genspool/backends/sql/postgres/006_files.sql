-- genspool schema for PostgreSQL, version 6: the records of files (genspool/files/), and the
-- chunks of the SQL blob store that keeps their bytes in a scaled-out deployment (no shared
-- directory): rows of about 1 MB, so that a file is written and read a chunk at a time. A
-- chunk is written under a temporary key and renamed with the rest on commit, so a reader
-- never sees part of a file, and ``created_at`` lets a sweep drop the parts of abandoned uploads.
CREATE TABLE IF NOT EXISTS files (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    filename   text NOT NULL,
    purpose    text NOT NULL,
    bytes      bigint NOT NULL,
    sha256     text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision,
    blob       text NOT NULL,
    status     text NOT NULL
);

CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, id);
CREATE INDEX IF NOT EXISTS files_expiring ON files (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS blob_chunks (
    key        text NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (key, seq)
);

