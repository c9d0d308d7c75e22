-- genspool schema for SQLite, version 6: the fan-out routes by name, and the revision of the
-- set: one row, moved on in the transaction of every write of a route (never reset, so that a
-- process polling it never sees it go back).
CREATE TABLE IF NOT EXISTS routes (
    name TEXT PRIMARY KEY,
    doc  BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS routes_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL
);

INSERT OR IGNORE INTO routes_revision (id, revision) VALUES (0, 0);
