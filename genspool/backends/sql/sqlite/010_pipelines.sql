-- genspool schema for SQLite, version 10: pipeline runs, their items and the ticks of schedules
-- (genspool/pipelines/). A run's whole record is the JSON ``doc`` (genspool.core.pipeline), and
-- the columns beside it are what a list, a runner's scan, the compare-and-set of ``run_update``
-- and the one run of a key read. An item's ``tenant`` and ``pipeline`` are its run's, copied so
-- that which keys a pipeline finished is one indexed read (``items_finished``).
CREATE TABLE IF NOT EXISTS runs (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    pipeline   TEXT NOT NULL,
    key        TEXT,
    active     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    doc        BLOB NOT NULL,
    UNIQUE (tenant, pipeline, key)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, id);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (tenant, pipeline, id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (id) WHERE active = 1;

CREATE TABLE IF NOT EXISTS run_items (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    tenant     TEXT NOT NULL,
    pipeline   TEXT NOT NULL,
    status     TEXT NOT NULL,
    doc        BLOB NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS run_items_in_order ON run_items (run_id, seq);
CREATE INDEX IF NOT EXISTS run_items_by_key ON run_items (tenant, pipeline, key, status);

CREATE TABLE IF NOT EXISTS ticks (
    pipeline    TEXT NOT NULL,
    at          REAL NOT NULL,
    outcome     TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    run_id      TEXT,
    PRIMARY KEY (pipeline, at)
) WITHOUT ROWID;
