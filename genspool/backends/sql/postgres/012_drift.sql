-- genspool schema for PostgreSQL, version 12: samples of models' answers for drift reports
-- (genspool/drift/). Plain columns, the embedding as float32 bytes: a report reads tens of
-- thousands of rows by (model, at) and parses nothing.
CREATE TABLE IF NOT EXISTS drift_samples (
    id            text PRIMARY KEY,
    model         text NOT NULL,
    at            double precision NOT NULL,
    prompt_chars  integer NOT NULL,
    output_chars  integer NOT NULL,
    embed_model   text NOT NULL,
    embedding     bytea NOT NULL,
    tenant        text NOT NULL
);

CREATE INDEX IF NOT EXISTS drift_samples_by_model ON drift_samples (model, at);
CREATE INDEX IF NOT EXISTS drift_samples_by_at ON drift_samples (at);
