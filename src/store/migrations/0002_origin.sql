-- Schema version 2: where a conversation came from, so front ends that are not a person at a
-- terminal can be told apart and filtered (`history list --source mcp`, `--batch ID`).
--
-- `source` is the front end that started the conversation: chat, run, mcp, batch or serve
-- (NULL for conversations stored before this version). `client` names the program on the other
-- side when there is one (an MCP client's name, an HTTP client's user agent). `batch_id` and
-- `batch_line` tie a conversation to one line of a `gemmactl batch` run.

ALTER TABLE conversations ADD COLUMN source TEXT;
ALTER TABLE conversations ADD COLUMN client TEXT;
ALTER TABLE conversations ADD COLUMN batch_id TEXT;
ALTER TABLE conversations ADD COLUMN batch_line TEXT;

CREATE INDEX conversations_by_batch ON conversations (batch_id) WHERE batch_id IS NOT NULL;
