-- Schema version 4: images attached to user messages.
--
-- One row per image, in the message's order (`position`), with where it stood in the text
-- (`at`, a byte offset), the file the user gave (`path`; NULL for bytes given inline, from an
-- HTTP data URL, an MCP call or a batch line), the history's own copy (`copy`, a file name in
-- the `images` folder beside the database, named by SHA-256 so the same image twice is kept
-- once; NULL when copies are turned off and the image came from a file), and what it is: media
-- type, size in bytes, SHA-256 and dimensions. Deleting a message (or its conversation) deletes
-- its rows; the copies stay, since other messages may show the same image.

CREATE TABLE message_images (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    path        TEXT,
    copy        TEXT,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    PRIMARY KEY (message_id, position),
    CHECK (path IS NOT NULL OR copy IS NOT NULL)
) WITHOUT ROWID;
