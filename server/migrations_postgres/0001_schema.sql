-- Banter on PostgreSQL: the schema of migrations/ (SQLite) as it stands after its
-- 0002, for several servers sharing one database. See src/storage/postgres/mod.rs.

-- A room's sequence: the last number given out (to a new message, an edit, a delete, a
-- reaction) and its newest message. Appends lock the row (SELECT … FOR UPDATE) for the
-- whole transaction, so numbers are gap-free and commit in order however many servers
-- append. A room is listed once it has a message (last_id > 0). Names compare byte-wise
-- (COLLATE "C"), as SQLite compares them, whatever the database's locale.
CREATE TABLE rooms (
    name     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_id  BIGINT NOT NULL DEFAULT 0,
    last_ts  BIGINT
);
CREATE INDEX rooms_activity ON rooms (last_ts, name) WHERE last_id > 0;

-- Each message in its latest version; `rev` is the number of that version (its id until
-- it changes). `text` is the exact bytes of the UTF-8 text (PostgreSQL's text type
-- cannot hold U+0000, which a message may). `search_text` is the text as search compares
-- it (lowercased by the server, the same way whatever the database's locale), NULL once
-- deleted. `arrival` numbers messages across rooms in the order they were stored: search
-- returns newest first by it and pages with it.
CREATE TABLE messages (
    room        TEXT COLLATE "C" NOT NULL,
    id          BIGINT  NOT NULL,
    rev         BIGINT  NOT NULL,
    author      TEXT    NOT NULL,
    -- A hash of the session token that posted it: who may edit or delete it.
    owner       TEXT    NOT NULL,
    text        BYTEA   NOT NULL,
    ts          BIGINT  NOT NULL,
    client_id   TEXT    NOT NULL,
    edited_ts   BIGINT,
    edits       INTEGER NOT NULL DEFAULT 0,
    deleted     BOOLEAN NOT NULL DEFAULT false,
    reply_to    BIGINT,
    -- JSON: [{"e": emoji, "by": [[owner, name], ...]}, ...]; NULL for none.
    reactions   TEXT,
    search_text TEXT,
    arrival     BIGINT  GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (room, id)
);
-- Only messages that changed are indexed by rev: the others have rev = id, and the
-- primary key finds them.
CREATE INDEX messages_changed ON messages (room, rev) WHERE rev <> id;
CREATE INDEX messages_arrival ON messages (arrival) WHERE search_text IS NOT NULL;

-- Every stored change's (room, owner, client_id), so a resend of any change is applied
-- once, whichever server it reaches.
CREATE TABLE change_ids (
    room      TEXT COLLATE "C" NOT NULL,
    owner     TEXT NOT NULL,
    client_id TEXT NOT NULL,
    -- The message the change touched.
    id        BIGINT NOT NULL,
    PRIMARY KEY (room, owner, client_id)
);

-- Who owns each name, so a restart does not free them all.
CREATE TABLE names (
    key       TEXT   NOT NULL PRIMARY KEY,
    name      TEXT   NOT NULL,
    owner     TEXT   NOT NULL,
    last_seen BIGINT NOT NULL
);

-- Search: with pg_trgm (in PostgreSQL's contrib, trusted, so a database owner may
-- install it) a trigram index finds the messages containing each word; without it,
-- search scans messages newest first. Either way the server's query is the same, and
-- exact (LIKE on search_text).
DO $$
DECLARE
    trgm_schema TEXT;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm unavailable (%): search scans messages', SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX messages_search ON messages USING gin (search_text %I.gin_trgm_ops)',
            trgm_schema);
    END IF;
END
$$;
