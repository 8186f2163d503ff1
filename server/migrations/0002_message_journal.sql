-- New messages are committed here first, in arrival order, so a commit writes the few
-- pages at the end of this table instead of a page per room in each index of `messages`.
-- The writer moves them into `messages` in bulk (room by room) and reads look at both.
CREATE TABLE message_journal (
    seq        INTEGER PRIMARY KEY,
    room       TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    author     TEXT    NOT NULL,
    author_key TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    client_id  TEXT    NOT NULL
);
