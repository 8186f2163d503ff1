-- Rooms exist once someone has joined them, so the room list survives restarts.
CREATE TABLE rooms (
    name       TEXT    NOT NULL PRIMARY KEY,
    created_ts INTEGER NOT NULL
);

-- Ids are per room, assigned by the server in the order it accepted the messages.
CREATE TABLE messages (
    room       TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    author     TEXT    NOT NULL,
    -- The author's name as compared for uniqueness; with client_id it makes resends
    -- idempotent.
    author_key TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    client_id  TEXT    NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX messages_client_id ON messages (room, author_key, client_id);
