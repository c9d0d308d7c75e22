-- genspool schema for SQLite, version 2: coordination shared by processes.
CREATE TABLE IF NOT EXISTS slots (
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS limits (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
