-- genspool schema for PostgreSQL, version 9: pipeline runs, their items and the ticks of
-- schedules (genspool/pipelines/). A run's whole record is the JSON ``doc``
-- (genspool.core.pipeline), and the columns beside it are what a list, a runner's scan, the
-- compare-and-set of ``run_update`` and the one run of a key read. An item's ``tenant`` and
-- ``pipeline`` are its run's, copied so that which keys a pipeline finished is one indexed read
-- (``items_finished``).
CREATE TABLE IF NOT EXISTS runs (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    pipeline   text NOT NULL,
    key        text,
    active     boolean NOT NULL,
    version    bigint NOT NULL,
    doc        bytea NOT NULL,
    UNIQUE (tenant, pipeline, key)
);

CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, id);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (tenant, pipeline, id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (id) WHERE active;

CREATE TABLE IF NOT EXISTS run_items (
    run_id     text NOT NULL,
    key        text NOT NULL,
    seq        bigint NOT NULL,
    tenant     text NOT NULL,
    pipeline   text NOT NULL,
    status     text NOT NULL,
    doc        bytea NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX IF NOT EXISTS run_items_in_order ON run_items (run_id, seq);
CREATE INDEX IF NOT EXISTS run_items_by_key ON run_items (tenant, pipeline, key, status);

CREATE TABLE IF NOT EXISTS ticks (
    pipeline    text NOT NULL,
    at          double precision NOT NULL,
    outcome     text NOT NULL,
    recorded_at double precision NOT NULL,
    run_id      text,
    PRIMARY KEY (pipeline, at)
);
