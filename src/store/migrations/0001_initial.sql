-- Schema version 1: conversations, messages as a tree, and full-text search over message text.
--
-- Timestamps are UTC RFC 3339 text with milliseconds ("2025-01-31T12:34:56.789Z"), written by
-- SQLite itself so every writer agrees on the clock format. Ids are INTEGER PRIMARY KEY
-- AUTOINCREMENT: short enough to type, and never reused after a delete, so an id a user saw
-- yesterday cannot silently name a different conversation today.

CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- From the first user message unless set explicitly; NULL until there is one.
    title       TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The model of the last turn; a conversation may switch models.
    model       TEXT,
    system      TEXT,
    -- The message the next turn continues from: the newest message, or a fork point.
    head_id     INTEGER REFERENCES messages(id) ON DELETE SET NULL
);

CREATE TABLE messages (
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
    finish_reason         TEXT CHECK (finish_reason IN ('stop', 'length', 'cancelled', 'error')),
    error                 TEXT,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at          TEXT,
    -- A parent must be in the same conversation: the pair is checked by the composite key.
    UNIQUE (conversation_id, id),
    FOREIGN KEY (conversation_id, parent_id) REFERENCES messages (conversation_id, id) ON DELETE CASCADE
);

-- Children of a message (and the parent key's cascade) look up by this pair.
CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id);
CREATE INDEX messages_by_model ON messages (model);
CREATE INDEX conversations_by_update ON conversations (updated_at);
-- Deleting a message looks up the conversations whose head it is.
CREATE INDEX conversations_by_head ON conversations (head_id);

-- External-content FTS5 index: the text lives once, in messages; triggers keep the index in step.
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
