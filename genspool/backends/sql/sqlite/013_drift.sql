-- genspool schema for SQLite, version 13: samples of models' answers for drift reports
-- (genspool/drift/). Plain columns, the embedding as float32 bytes: a report reads tens of
-- thousands of rows by (model, at) and parses nothing. (Version 12 is the prompt registry's.)
CREATE TABLE IF NOT EXISTS drift_samples (
    id            TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    at            REAL NOT NULL,
    prompt_chars  INTEGER NOT NULL,
    output_chars  INTEGER NOT NULL,
    embed_model   TEXT NOT NULL,
    embedding     BLOB NOT NULL,
    tenant        TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS drift_samples_by_model ON drift_samples (model, at);
CREATE INDEX IF NOT EXISTS drift_samples_by_at ON drift_samples (at);
