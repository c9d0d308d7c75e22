-- genspool schema for PostgreSQL, version 5: the fan-out routes by name, and the revision of
-- the set. The revision is one row moved on by the statement that writes a route, not a
-- sequence: nextval() is seen by others before the write commits, so a process could read the
-- new revision, then the old routes, and keep them.
CREATE TABLE IF NOT EXISTS routes (
    name text PRIMARY KEY,
    doc  bytea NOT NULL
);

CREATE TABLE IF NOT EXISTS routes_revision (
    id       integer PRIMARY KEY CHECK (id = 0),
    revision bigint NOT NULL
);

INSERT INTO routes_revision (id, revision) VALUES (0, 0) ON CONFLICT (id) DO NOTHING;
