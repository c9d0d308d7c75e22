-- genspool schema for PostgreSQL, version 7: the records of batches (genspool/batches/). The
-- whole record is the JSON ``doc`` (genspool.core.batch), and the columns beside it are what a
-- list, a runner's scan and the compare-and-set of ``batch_update`` read.
CREATE TABLE IF NOT EXISTS batches (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    active     boolean NOT NULL,
    version    bigint NOT NULL,
    doc        bytea NOT NULL
);

CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, id);
CREATE INDEX IF NOT EXISTS batches_active ON batches (id) WHERE active;
