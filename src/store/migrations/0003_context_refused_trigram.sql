-- Schema version 3: three things bad input showed were missing.
--
-- 1. A reply cut because the context window filled up has its own finish reason, `context`,
--    apart from `length` (the caller's token limit).
-- 2. A user message the model refused as longer than the whole context is kept, marked
--    `refused`, and never sent to a model again, so one oversized message cannot make every
--    later turn of its conversation fail the same way.
-- 3. Words inside text with no spaces between them (Chinese, Japanese, Thai) are found: a second
--    full-text index with FTS5's trigram tokenizer sits beside the word index, which only sees
--    such text as one long word.
--
-- SQLite cannot change a CHECK constraint in place, so `messages` is rebuilt: a new table with
-- the new constraint and column, every row copied with its id, the old table dropped and the new
-- one renamed. The migration runner turns foreign-key enforcement off around this (as SQLite's
-- documentation prescribes for a table rebuild; otherwise dropping the old table would cascade)
-- and checks every key before committing. Both search indexes hold row ids and text, which are
-- unchanged, so the word index stays valid; the triggers went with the old table and are made
-- again, now feeding both indexes.

CREATE TABLE messages_new (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id       INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    -- NULL for a root; several messages with one parent are branches.
    parent_id             INTEGER,
    role                  TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content               TEXT NOT NULL DEFAULT '',
    model                 TEXT,
    engine                TEXT,
    backend               TEXT,
    -- SamplingParams as JSON.
    parameters            TEXT,
    prompt_tokens         INTEGER,
    cached_tokens         INTEGER,
    completion_tokens     INTEGER,
    queue_ms              REAL,
    ttft_ms               REAL,
    prefill_tokens_per_s  REAL,
    decode_tokens_per_s   REAL,
    total_ms              REAL,
    -- NULL on a reply still being generated, or whose writer died before it ended.
    finish_reason         TEXT CHECK (finish_reason IN ('stop', 'length', 'context', 'cancelled', 'error')),
    error                 TEXT,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at          TEXT,
    -- 1 on a user message refused as longer than the context: kept, never sent again.
    refused               INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1)),
    -- A parent must be in the same conversation: the pair is checked by the composite key.
    UNIQUE (conversation_id, id),
    FOREIGN KEY (conversation_id, parent_id) REFERENCES messages (conversation_id, id) ON DELETE CASCADE
);

INSERT INTO messages_new (id, conversation_id, parent_id, role, content, model, engine, backend,
        parameters, prompt_tokens, cached_tokens, completion_tokens, queue_ms, ttft_ms,
        prefill_tokens_per_s, decode_tokens_per_s, total_ms, finish_reason, error, created_at,
        completed_at)
    SELECT id, conversation_id, parent_id, role, content, model, engine, backend,
        parameters, prompt_tokens, cached_tokens, completion_tokens, queue_ms, ttft_ms,
        prefill_tokens_per_s, decode_tokens_per_s, total_ms, finish_reason, error, created_at,
        completed_at
    FROM messages;

-- AUTOINCREMENT's counter lives in sqlite_sequence under the table's name: carry it over (the
-- rename takes it along), so an id used by a message deleted before the rebuild is never reused.
DELETE FROM sqlite_sequence WHERE name = 'messages_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'messages_new', seq FROM sqlite_sequence WHERE name = 'messages';

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id);
CREATE INDEX messages_by_model ON messages (model);

-- The substring index for scripts written without spaces. External content, like the word index.
CREATE VIRTUAL TABLE messages_trigram USING fts5 (
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO messages_trigram (messages_trigram) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    INSERT INTO messages_trigram (rowid, content) VALUES (new.id, new.content);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_trigram (messages_trigram, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    INSERT INTO messages_trigram (messages_trigram, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_trigram (rowid, content) VALUES (new.id, new.content);
END;
