-- genspool schema for PostgreSQL, version 11: the prompt registry (genspool.core.prompts).
-- A version's whole record is the JSON ``doc``, never updated, a label is one row moved by
-- compare-and-set on ``revision``, and the audit keeps one row per change, written by the same
-- statement as the change. Everything is keyed by tenant first: a prompt id is a tenant's own.
CREATE TABLE IF NOT EXISTS prompt_versions (
    tenant     text NOT NULL,
    prompt_id  text NOT NULL,
    version    integer NOT NULL,
    doc        bytea NOT NULL,
    PRIMARY KEY (tenant, prompt_id, version)
);

CREATE TABLE IF NOT EXISTS prompt_labels (
    tenant     text NOT NULL,
    prompt_id  text NOT NULL,
    label      text NOT NULL,
    revision   integer NOT NULL,
    doc        bytea NOT NULL,
    PRIMARY KEY (tenant, prompt_id, label)
);

CREATE TABLE IF NOT EXISTS prompt_audit (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    prompt_id  text NOT NULL,
    doc        bytea NOT NULL
);

CREATE INDEX IF NOT EXISTS prompt_audit_by_prompt ON prompt_audit (tenant, prompt_id, id);
