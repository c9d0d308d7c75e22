-- genspool schema for SQLite, version 8: the records of batches (genspool/batches/). The whole
-- record is the JSON ``doc`` (genspool.core.batch), and the columns beside it are what a list, a
-- runner's scan and the compare-and-set of ``batch_update`` read.
CREATE TABLE IF NOT EXISTS batches (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    active     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    doc        BLOB NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, id);
CREATE INDEX IF NOT EXISTS batches_active ON batches (id) WHERE active = 1;
