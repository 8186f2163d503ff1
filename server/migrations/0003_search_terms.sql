-- Search index, second form: the server computes each message's terms (its distinct
-- trigrams inside words, as short tokens; see storage/sqlite/search_terms.rs) and the
-- index stores them with the `ascii` tokenizer. It keeps no per-row sizes (columnsize=0:
-- results are ordered by row, never ranked), so it cannot use contentless_delete; the
-- mover takes a message's terms out with FTS5's 'delete' command, computed from the text
-- the index was given. The SQL here cannot compute terms, so the index starts empty and
-- `search_rebuild` asks the server to fill it from `search_rows` at its next start.
DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = '',
    tokenize = 'ascii',
    detail = none,
    columnsize = 0
);
CREATE TABLE search_rebuild (pending INTEGER NOT NULL);
INSERT INTO search_rebuild (pending) VALUES (1);
