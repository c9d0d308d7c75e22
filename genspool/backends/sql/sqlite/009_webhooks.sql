-- genspool schema for SQLite, version 9: webhook subscriptions (genspool/webhooks/). The whole
-- record is the JSON ``doc`` (genspool.backends._webhooks), and ``tenant`` is what a list reads.
CREATE TABLE IF NOT EXISTS webhooks (
    id      TEXT PRIMARY KEY,
    tenant  TEXT NOT NULL,
    doc     BLOB NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks (tenant, id);
