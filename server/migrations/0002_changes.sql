-- Contract v2: a room's history is a sequence of changes (new messages, edits, deletes,
-- reactions). `messages` holds each message's latest version; `rev` is the sequence
-- number of that version (the message's id until it changes).
ALTER TABLE messages ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET rev = id;
-- A hash of the session token that posted it: who may edit or delete it. Messages from
-- before sessions were stored have none, and can be edited by nobody.
ALTER TABLE messages ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN edited_ts INTEGER;
ALTER TABLE messages ADD COLUMN edits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
-- JSON: [{"e": emoji, "by": [[owner, name], ...]}, ...]; NULL for none.
ALTER TABLE messages ADD COLUMN reactions TEXT;
-- The message's row in messages_fts, while its text is searchable.
ALTER TABLE messages ADD COLUMN fts INTEGER;
-- Only messages that changed are indexed by rev: the others have rev = id, and the
-- primary key finds them (most messages never change, so this costs them nothing).
CREATE INDEX messages_changed ON messages (room, rev) WHERE rev != id;

-- Every change's (room, owner, client_id), so a resend of any change is applied once.
-- Keyed by the session, not the name: whoever takes a name over later cannot make the
-- earlier owner's messages look like resends. `owner` is the 16 bytes of the owner's
-- hash (its hex text for owners that are not one), to keep the keys short.
CREATE TABLE change_ids (
    room      TEXT    NOT NULL,
    owner     BLOB    NOT NULL,
    client_id TEXT    NOT NULL,
    -- The message the change touched.
    id        INTEGER NOT NULL,
    PRIMARY KEY (room, owner, client_id)
) WITHOUT ROWID;
-- Messages from before: their resends were recognised by name.
INSERT INTO change_ids (room, owner, client_id, id)
    SELECT room, CAST('name:' || author_key AS BLOB), client_id, id FROM messages;
DROP INDEX messages_client_id;
ALTER TABLE messages DROP COLUMN author_key;

-- Rooms exist once they have a message; the newest one's id and time order the list.
ALTER TABLE rooms ADD COLUMN last_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN last_ts INTEGER;
ALTER TABLE rooms ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET
    last_id = COALESCE((SELECT MAX(id) FROM messages WHERE room = rooms.name), 0),
    last_seq = COALESCE((SELECT MAX(rev) FROM messages WHERE room = rooms.name), 0);
UPDATE rooms SET last_ts = (SELECT ts FROM messages WHERE room = rooms.name AND id = rooms.last_id);
INSERT INTO rooms (name, created_ts, last_id, last_ts, last_seq)
    SELECT room, MIN(ts), MAX(id), NULL, MAX(id) FROM messages
    WHERE room NOT IN (SELECT name FROM rooms) GROUP BY room;
UPDATE rooms SET last_ts = (SELECT ts FROM messages WHERE room = rooms.name AND id = rooms.last_id)
    WHERE last_ts IS NULL;
DELETE FROM rooms WHERE last_id = 0;
CREATE INDEX rooms_activity ON rooms (last_ts DESC, name DESC);

-- Who owns each name, so a restart does not free them all.
CREATE TABLE names (
    key       TEXT    NOT NULL PRIMARY KEY,
    name      TEXT    NOT NULL,
    owner     TEXT    NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;

-- Full-text search: trigrams match any run of three characters in any script. The index
-- keeps neither the text (contentless: `messages` has it) nor positions (detail=none: a
-- word matches when all its trigrams occur, and the server checks each candidate's
-- text), so it is a fraction of the size and costs a fraction to write. Its rows are
-- numbered in the order messages arrive (newest first is the index's own order), and
-- `search_rows` says which message each row is.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = '',
    contentless_delete = 1,
    tokenize = 'trigram',
    detail = none
);
CREATE TABLE search_rows (
    row  INTEGER PRIMARY KEY,
    room TEXT    NOT NULL,
    id   INTEGER NOT NULL
);
-- Older messages become searchable too, numbered in the order they were written.
UPDATE messages SET fts = numbered.n
    FROM (SELECT room, id, ROW_NUMBER() OVER (ORDER BY ts, room, id) AS n FROM messages) AS numbered
    WHERE numbered.room = messages.room AND numbered.id = messages.id;
INSERT INTO messages_fts (rowid, text) SELECT fts, text FROM messages;
INSERT INTO search_rows (row, room, id) SELECT fts, room, id FROM messages;
