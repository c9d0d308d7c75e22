-- genspool schema for PostgreSQL, version 10: vector stores, their files, their chunks and the
-- embedding cache (genspool.core.vectors). A store's or a file's whole record is the JSON
-- ``doc``, and the columns beside it are what a list, the scan of files in progress and the
-- compare-and-set of an update read.
CREATE TABLE IF NOT EXISTS vector_stores (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    version    bigint NOT NULL,
    doc        bytea NOT NULL
);

CREATE INDEX IF NOT EXISTS vector_stores_by_tenant ON vector_stores (tenant, id);

CREATE TABLE IF NOT EXISTS vector_files (
    store_id   text NOT NULL,
    id         text NOT NULL,
    tenant     text NOT NULL,
    status     text NOT NULL,
    version    bigint NOT NULL,
    doc        bytea NOT NULL,
    PRIMARY KEY (store_id, id)
);

CREATE INDEX IF NOT EXISTS vector_files_by_status ON vector_files (status, id);

-- The key puts ``seq`` before ``generation``: a file has one current generation, so the key's
-- order is the ``(file_id, seq)`` order that ``chunks_current`` pages by and ``chunks_get``
-- looks up, and deleting a file's other generations still reads only that file's rows.
-- ``vector`` is float32 little-endian, and ``headings`` and ``attributes`` are JSON.
CREATE TABLE IF NOT EXISTS chunks (
    store_id     text NOT NULL,
    file_id      text NOT NULL,
    seq          bigint NOT NULL,
    generation   bigint NOT NULL,
    text         text NOT NULL,
    start_offset bigint NOT NULL,
    end_offset   bigint NOT NULL,
    tokens       bigint NOT NULL,
    page         bigint,
    headings     jsonb NOT NULL,
    attributes   jsonb NOT NULL,
    vector       bytea NOT NULL,
    PRIMARY KEY (store_id, file_id, seq, generation)
);

-- The current generation of each file that has one: a chunk is searched only when its
-- generation is its file's here.
CREATE TABLE IF NOT EXISTS chunk_heads (
    store_id   text NOT NULL,
    file_id    text NOT NULL,
    generation bigint NOT NULL,
    PRIMARY KEY (store_id, file_id)
);

-- Moved on by every flip and drop, in its transaction: a process holding a store's vectors in
-- memory reloads them when it moved.
CREATE TABLE IF NOT EXISTS chunk_revisions (
    store_id   text PRIMARY KEY,
    revision   bigint NOT NULL
);

-- Vectors by the hash of the text they embed, per model and dimensions.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model      text NOT NULL,
    dimensions bigint NOT NULL,
    key        text NOT NULL,
    vector     bytea NOT NULL,
    PRIMARY KEY (model, dimensions, key)
);
