-- genspool schema for PostgreSQL, version 8: webhook subscriptions (genspool/webhooks/). The
-- whole record is the JSON ``doc`` (genspool.backends._webhooks), and ``tenant`` is what a list reads.
CREATE TABLE IF NOT EXISTS webhooks (
    id      text PRIMARY KEY,
    tenant  text NOT NULL,
    doc     bytea NOT NULL
);

CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks (tenant, id);
