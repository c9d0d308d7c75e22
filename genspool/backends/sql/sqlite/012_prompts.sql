-- genspool schema for SQLite, version 12: the prompt registry (genspool.core.prompts). A
-- version's whole record is the JSON ``doc``, never updated, a label is one row moved by
-- compare-and-set on ``revision``, and the audit keeps one row per change, written in the same
-- transaction as the change. Everything is keyed by tenant first: a prompt id is a tenant's own.
CREATE TABLE IF NOT EXISTS prompt_versions (
    tenant     TEXT NOT NULL,
    prompt_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    doc        BLOB NOT NULL,
    PRIMARY KEY (tenant, prompt_id, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS prompt_labels (
    tenant     TEXT NOT NULL,
    prompt_id  TEXT NOT NULL,
    label      TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    doc        BLOB NOT NULL,
    PRIMARY KEY (tenant, prompt_id, label)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS prompt_audit (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    prompt_id  TEXT NOT NULL,
    doc        BLOB NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS prompt_audit_by_prompt ON prompt_audit (tenant, prompt_id, id);
