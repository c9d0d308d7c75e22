-- genspool schema for SQLite, version 11: vector stores, their files, their chunks and the
-- embedding cache (genspool.core.vectors). A store's or a file's whole record is the JSON
-- ``doc``, and the columns beside it are what a list, the scan of files in progress and the
-- compare-and-set of an update read.
CREATE TABLE IF NOT EXISTS vector_stores (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    doc        BLOB NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS vector_stores_by_tenant ON vector_stores (tenant, id);

CREATE TABLE IF NOT EXISTS vector_files (
    store_id   TEXT NOT NULL,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    doc        BLOB NOT NULL,
    PRIMARY KEY (store_id, id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS vector_files_by_status ON vector_files (status, id);

-- The key puts ``seq`` before ``generation``: a file has one current generation, so the key's
-- order is the ``(file_id, seq)`` order that ``chunks_current`` pages by and ``chunks_get``
-- looks up, and deleting a file's other generations still reads only that file's rows.
-- ``vector`` is float32 little-endian, and ``headings`` and ``attributes`` are JSON.
CREATE TABLE IF NOT EXISTS chunks (
    store_id     TEXT NOT NULL,
    file_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    generation   INTEGER NOT NULL,
    text         TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset   INTEGER NOT NULL,
    tokens       INTEGER NOT NULL,
    page         INTEGER,
    headings     TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    vector       BLOB NOT NULL,
    PRIMARY KEY (store_id, file_id, seq, generation)
) WITHOUT ROWID;

-- The current generation of each file that has one: a chunk is searched only when its
-- generation is its file's here.
CREATE TABLE IF NOT EXISTS chunk_heads (
    store_id   TEXT NOT NULL,
    file_id    TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (store_id, file_id)
) WITHOUT ROWID;

-- Moved on by every flip and drop, in its transaction: a process holding a store's vectors in
-- memory reloads them when it moved.
CREATE TABLE IF NOT EXISTS chunk_revisions (
    store_id   TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL
) WITHOUT ROWID;

-- Vectors by the hash of the text they embed, per model and dimensions.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model      TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    key        TEXT NOT NULL,
    vector     BLOB NOT NULL,
    PRIMARY KEY (model, dimensions, key)
) WITHOUT ROWID;
