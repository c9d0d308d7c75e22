-- genspool schema for PostgreSQL, version 2: coordination shared by processes, and the
-- bodies of broadcasts too large for a NOTIFY payload.
CREATE TABLE slots (
    name       text NOT NULL,
    holder     text NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (name, holder)
);

CREATE TABLE limits (
    key text PRIMARY KEY,
    tat double precision NOT NULL
);

CREATE TABLE kv (
    namespace text NOT NULL,
    key       text NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- A broadcast over the NOTIFY payload limit is stored here and only its id is notified;
-- purge() deletes rows once every listener has had ample time to read them.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    bytea NOT NULL,
    created_at double precision NOT NULL
);

-- Take one of p_limit slots of p_name for p_holder in one round trip. The advisory lock
-- serialises takers of one name (row locks cannot: a name with no rows has nothing to lock),
-- so two processes never both see a free slot and both take it.
CREATE FUNCTION acquire_slot(p_name text, p_holder text, p_limit integer,
                             p_until double precision, p_now double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('genspool.slot:' || current_schema()
                                                   || ':' || p_name, 0));
    DELETE FROM slots WHERE name = p_name AND expires_at <= p_now;
    UPDATE slots SET expires_at = p_until WHERE name = p_name AND holder = p_holder;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF (SELECT count(*) FROM slots WHERE name = p_name) >= p_limit THEN
        RETURN false;
    END IF;
    INSERT INTO slots (name, holder, expires_at) VALUES (p_name, p_holder, p_until);
    RETURN true;
END
$$;
