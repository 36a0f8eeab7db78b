//! The history database: every conversation and message, in one SQLite file (`history.db` in the
//! data folder). This module is the only code that writes SQL.
//!
//! Shaped after atuin's store: [`Store`] owns the connection; the schema lives in plain SQL files
//! under `migrations/`; search and export are modules of their own. Front ends (the chat shell,
//! `run`, `history`) call the methods below and get the shared protocol types back
//! ([`Message`], [`Role`], [`FinishReason`], [`Usage`], [`Timings`], [`SamplingParams`]).
//!
//! Crash safety comes from SQLite's write-ahead log and from committing early: a user's message is
//! committed before generation starts ([`Store::add_user_message`]), a reply row exists from its
//! first moment ([`Store::start_reply`]) and is completed by [`Store::finish_reply`]. If gemmactl
//! dies in between, the reply stays with no finish reason and shows as unfinished; nothing
//! committed is lost. `synchronous = FULL` makes a commit survive a power cut too.
//!
//! Ids are SQLite integers (`12`, not UUIDs): short enough to type in `history show 12` or
//! `/fork 40`, and never reused after a delete. Message ids are unique across conversations.

mod batch;
mod error;
pub mod export;
mod images;
mod migrations;
mod reading;
pub mod search;
pub mod tree;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::domain::{
    BatchLine, FinishReason, Image, Message, Origin, Role, SamplingParams, Source, Timings, Usage,
};
pub use error::StoreError;
pub use export::ImportSummary;
pub use search::SearchHit;

/// A store operation's outcome; the error says which database and what to do.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a write waits for another process's transaction before reporting the database locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The current time as SQLite writes it: UTC RFC 3339 with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Longest automatic title, in characters.
const TITLE_CHARS: usize = 60;

/// Names a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub i64);

/// Names a message, unique across all conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub i64);

macro_rules! id_text {
    ($ty:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Through the inner Display, so table widths (`{:<4}`) apply.
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $ty {
            type Err = String;
            /// Accepts `12`, and `#12` as the shell prints it.
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                let digits = s.trim().trim_start_matches('#');
                match digits.parse::<i64>() {
                    Ok(n) if n > 0 => Ok($ty(n)),
                    _ => Err(format!(
                        "{s:?} is not a {} id: ids are positive numbers like 12",
                        $what
                    )),
                }
            }
        }
    };
}
id_text!(ConversationId, "conversation");
id_text!(MessageId, "message");

/// A conversation's own fields (its messages are fetched separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// The first line of the first user message, unless set.
    pub title: Option<String>,
    /// When it was created: UTC RFC 3339 with milliseconds (`2025-03-01T10:00:00.000Z`).
    pub created_at: String,
    /// When it was last used (a message added, the system prompt set, a fork), in the same form;
    /// `history list` and `chat --continue` go by it.
    pub updated_at: String,
    /// The model of the last turn.
    pub model: Option<String>,
    /// The system prompt sent before the messages.
    pub system: Option<String>,
    /// The message the next turn continues from: the newest message, or where `fork` pointed.
    pub head: Option<MessageId>,
    /// Where it came from (front end, client, batch line); `None` before schema version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A row of `list_conversations`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    /// The conversation's own fields.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Messages in it, across all branches.
    pub messages: u32,
}

/// One stored message with everything known about how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message's id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// The message it answers or follows; `None` for a root.
    pub parent: Option<MessageId>,
    /// Who wrote it.
    pub role: Role,
    /// Its text (for an unfinished reply, what was saved so far).
    pub content: String,
    /// For a user message, the model it was sent to; for a reply, the model that wrote it.
    pub model: Option<String>,
    /// The engine program that wrote a reply (e.g. `gemma-engine`); `None` on user messages.
    pub engine: Option<String>,
    /// Where the reply was computed (e.g. `CPU`, `CUDA`); `None` on user messages.
    pub backend: Option<String>,
    /// The sampling settings the turn was sent with.
    pub params: Option<SamplingParams>,
    /// A reply's token counts, as the engine reported them.
    pub usage: Option<Usage>,
    /// A reply's timings (queue, time to first token, prefill and decode speed), as reported.
    pub timings: Option<Timings>,
    /// `None` on a user message, and on a reply that is still being written or whose writer died.
    pub finish_reason: Option<FinishReason>,
    /// Why a reply with finish reason `error` was cut short, as one sentence.
    pub error: Option<String>,
    /// When the row was created: UTC RFC 3339 with milliseconds.
    pub created_at: String,
    /// When a reply was finished, in the same form; `None` on user messages and unfinished replies.
    pub completed_at: Option<String>,
    /// A user message the model refused as longer than the whole context: kept, shown, and
    /// never sent to a model again (schema version 3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The images a user message showed, in order (schema version 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl StoredMessage {
    /// The message as an engine request carries it.
    pub fn message(&self) -> Message {
        Message::new(self.role, self.content.clone()).with_images(self.images.clone())
    }

    /// A reply that never got a finish reason: in progress, or its writer died.
    pub fn is_unfinished(&self) -> bool {
        self.role == Role::Assistant && self.finish_reason.is_none()
    }

    /// Whether a model is sent this message as part of its conversation: not a reply with no
    /// text (stopped before its first token, failed, unfinished), not a refused message.
    pub fn is_context(&self) -> bool {
        !(self.refused || (self.role == Role::Assistant && self.content.is_empty()))
    }
}

/// How a reply ended, for [`Store::finish_reply`]. `Completion` from the supervisor maps onto it
/// field by field; a reply cut short by a failure has `finish_reason: Error` and `error` set.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyEnd {
    /// The whole reply text (possibly partial).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts, when the engine reported them.
    pub usage: Option<Usage>,
    /// Timings, when the engine reported them.
    pub timings: Option<Timings>,
    /// The engine program that wrote it (e.g. `gemma-engine`), if one was started.
    pub engine: Option<String>,
    /// Where it was computed (e.g. `CPU`), if an engine was started.
    pub backend: Option<String>,
    /// The failure that cut it short, as one sentence; set with finish reason `error`.
    pub error: Option<String>,
}

/// Owns the connection to one history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The file's device and inode when it was opened, to notice it being moved or deleted
    /// while open (SQLite in WAL mode keeps writing to the moved file without an error);
    /// `None` for a read-only store.
    identity: Option<(u64, u64)>,
}

/// The device and inode of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Maps a SQLite failure on the database at `path`.
fn fail(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::from_sqlite(path, e)
}

impl Store {
    /// Opens (creating if needed) the database in the user's data folder.
    pub fn open_default(paths: &Paths) -> Result<Store> {
        Store::open(&paths.history_db())
    }

    /// Opens or creates the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(fail(path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail(path))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(fail(path))?;
        // Read the version before changing anything: a newer database is left exactly as it is.
        // This is also the first read of the file, where a non-database is detected.
        let found = migrations::user_version(&conn).map_err(fail(path))?;
        let supported = migrations::latest();
        if found > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        // WAL: readers never block the writer, and a killed writer leaves only an uncommitted
        // tail in the log that SQLite discards on the next open.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(fail(path))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail(path))?;
        match migrations::apply(&mut conn).map_err(fail(path))? {
            migrations::Outcome::Current { .. } => {}
            migrations::Outcome::TooNew { found } => {
                return Err(StoreError::TooNew {
                    path: path.to_path_buf(),
                    found,
                    supported,
                })
            }
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            identity: file_identity(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a write when the file was moved or deleted since it was opened: what would be
    /// written would land in a file nobody opens again.
    fn writable(&self) -> Result<()> {
        match self.identity {
            Some(opened) if file_identity(&self.path) != Some(opened) => Err(StoreError::Moved {
                path: self.path.clone(),
            }),
            _ => Ok(()),
        }
    }

    // ----- conversations -----

    /// Starts an empty conversation.
    pub fn create_conversation(
        &mut self,
        system: Option<&str>,
        origin: &Origin,
    ) -> Result<ConversationId> {
        self.writable()?;
        let batch = origin.batch.as_ref();
        self.conn
            .execute(
                "INSERT INTO conversations (system, source, client, batch_id, batch_line)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    system,
                    origin.source.as_str(),
                    origin.client,
                    batch.map(|b| &b.batch_id),
                    batch.map(|b| &b.line_id)
                ],
            )
            .map_err(fail(&self.path))?;
        Ok(ConversationId(self.conn.last_insert_rowid()))
    }

    /// The conversation's own fields, or [`StoreError::ConversationNotFound`].
    pub fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        self.conn
            .query_row(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"),
                [id.0],
                conversation_from_row,
            )
            .optional()
            .map_err(fail(&self.path))?
            .ok_or(StoreError::ConversationNotFound(id))
    }

    /// The conversation used most recently (`chat --continue`), if any.
    pub fn latest_conversation(&self) -> Result<Option<Conversation>> {
        self.conn
            .query_row(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1"),
                [],
                conversation_from_row,
            )
            .optional()
            .map_err(fail(&self.path))
    }

    /// Most recently used first. `model` keeps conversations in which any message used it.
    pub fn list_conversations(
        &self,
        limit: usize,
        model: Option<&str>,
    ) -> Result<Vec<ConversationSummary>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS},
                    (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
             FROM conversations c
             WHERE ?1 IS NULL OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.model = ?1)
             ORDER BY updated_at DESC, id DESC
             LIMIT ?2"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(&sql).map_err(fail(&self.path))?;
        let rows = stmt
            .query_map(params![model, limit], |row| {
                Ok(ConversationSummary {
                    conversation: conversation_from_row(row)?,
                    messages: row.get(11)?,
                })
            })
            .map_err(fail(&self.path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail(&self.path))
    }

    /// Sets (or with `None` removes) the system prompt; later turns are sent with it.
    pub fn set_system(&mut self, conversation: ConversationId, system: Option<&str>) -> Result<()> {
        self.writable()?;
        let sql = format!("UPDATE conversations SET system = ?2, updated_at = {NOW} WHERE id = ?1");
        self.update_conversation(conversation, &sql, system)
    }

    /// Sets the conversation's title (replacing the automatic one).
    pub fn set_title(&mut self, conversation: ConversationId, title: &str) -> Result<()> {
        self.writable()?;
        self.update_conversation(
            conversation,
            "UPDATE conversations SET title = ?2 WHERE id = ?1",
            Some(title),
        )
    }

    fn update_conversation(
        &mut self,
        id: ConversationId,
        sql: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let changed = self
            .conn
            .execute(sql, params![id.0, value])
            .map_err(fail(&self.path))?;
        if changed == 0 {
            return Err(StoreError::ConversationNotFound(id));
        }
        Ok(())
    }

    /// Deletes a conversation and all its messages (and their search entries).
    pub fn delete_conversation(&mut self, id: ConversationId) -> Result<()> {
        self.writable()?;
        let changed = self
            .conn
            .execute("DELETE FROM conversations WHERE id = ?1", [id.0])
            .map_err(fail(&self.path))?;
        if changed == 0 {
            return Err(StoreError::ConversationNotFound(id));
        }
        Ok(())
    }

    // ----- the message tree -----

    /// Stores the user's turn and commits it before anything is generated. `parent` is the
    /// message it answers (usually [`Store::head`]); `None` starts a root. The first user
    /// message names the conversation.
    pub fn add_user_message(
        &mut self,
        conversation: ConversationId,
        parent: Option<MessageId>,
        text: &str,
        model: &str,
        params: &SamplingParams,
    ) -> Result<MessageId> {
        self.add_user_message_with_images(conversation, parent, text, &[], model, params)
    }

    /// [`Store::add_user_message`] for a message that shows `images`. Each must be in a file
    /// (the user's, or its copy from [`Store::keep_image`]) for the history to find it again.
    pub fn add_user_message_with_images(
        &mut self,
        conversation: ConversationId,
        parent: Option<MessageId>,
        text: &str,
        images: &[Image],
        model: &str,
        params: &SamplingParams,
    ) -> Result<MessageId> {
        self.writable()?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail(path))?;
        check_parent(&tx, path, conversation, parent)?;
        tx.execute(
            "INSERT INTO messages (conversation_id, parent_id, role, content, model, parameters)
             VALUES (?1, ?2, 'user', ?3, ?4, ?5)",
            params![
                conversation.0,
                parent.map(|p| p.0),
                text,
                model,
                params_json(params)
            ],
        )
        .map_err(fail(path))?;
        let id = MessageId(tx.last_insert_rowid());
        images::insert_images(&tx, id, images).map_err(fail(path))?;
        tx.execute(
            &format!(
                "UPDATE conversations SET head_id = ?2, model = ?3, updated_at = {NOW},
                        title = coalesce(title, ?4)
                 WHERE id = ?1"
            ),
            params![conversation.0, id.0, model, title_from(text)],
        )
        .map_err(fail(path))?;
        tx.commit().map_err(fail(path))?;
        Ok(id)
    }

    /// Creates the reply to `parent` before its first token, with no finish reason yet, and
    /// commits it; [`Store::finish_reply`] completes it. Returns the reply's id.
    pub fn start_reply(
        &mut self,
        parent: MessageId,
        model: &str,
        params: &SamplingParams,
    ) -> Result<MessageId> {
        self.writable()?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail(path))?;
        let conversation = conversation_of(&tx, path, parent)?;
        tx.execute(
            "INSERT INTO messages (conversation_id, parent_id, role, content, model, parameters)
             VALUES (?1, ?2, 'assistant', '', ?3, ?4)",
            params![conversation.0, parent.0, model, params_json(params)],
        )
        .map_err(fail(path))?;
        let id = MessageId(tx.last_insert_rowid());
        tx.execute(
            &format!("UPDATE conversations SET head_id = ?2, model = ?3, updated_at = {NOW} WHERE id = ?1"),
            params![conversation.0, id.0, model],
        )
        .map_err(fail(path))?;
        tx.commit().map_err(fail(path))?;
        Ok(id)
    }

    /// Saves the text generated so far, so a crash keeps it; cheap enough to call every second
    /// or so while a reply streams. Only an unfinished reply can be updated.
    pub fn save_partial_reply(&mut self, reply: MessageId, text: &str) -> Result<()> {
        self.writable()?;
        let changed = self
            .conn
            .execute(
                "UPDATE messages SET content = ?2
                 WHERE id = ?1 AND role = 'assistant' AND finish_reason IS NULL",
                params![reply.0, text],
            )
            .map_err(fail(&self.path))?;
        self.changed_reply(reply, changed)
    }

    /// Completes a reply started with [`Store::start_reply`]: its text, how it ended, its token
    /// counts and timings, and which engine and backend made it. The conversation's `updated_at`
    /// becomes the reply's completion time: a conversation was last updated when its last reply
    /// ended, not when it began.
    pub fn finish_reply(&mut self, reply: MessageId, end: &ReplyEnd) -> Result<()> {
        self.writable()?;
        let usage = end.usage.as_ref();
        let timings = end.timings.as_ref();
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail(path))?;
        let changed = tx
            .execute(
                &format!(
                    "UPDATE messages SET content = ?2, finish_reason = ?3, error = ?4, engine = ?5, backend = ?6,
                            prompt_tokens = ?7, cached_tokens = ?8, completion_tokens = ?9,
                            queue_ms = ?10, ttft_ms = ?11, prefill_tokens_per_s = ?12,
                            decode_tokens_per_s = ?13, total_ms = ?14, completed_at = {NOW}
                     WHERE id = ?1 AND role = 'assistant' AND finish_reason IS NULL"
                ),
                params![
                    reply.0,
                    end.text,
                    end.finish_reason.as_str(),
                    end.error,
                    end.engine,
                    end.backend,
                    usage.map(|u| u.prompt_tokens),
                    usage.map(|u| u.cached_tokens),
                    usage.map(|u| u.completion_tokens),
                    timings.map(|t| t.queue_ms),
                    timings.map(|t| t.ttft_ms),
                    timings.map(|t| t.prefill_tokens_per_s),
                    timings.map(|t| t.decode_tokens_per_s),
                    timings.map(|t| t.total_ms),
                ],
            )
            .map_err(fail(path))?;
        if changed > 0 {
            tx.execute(
                "UPDATE conversations SET updated_at = (SELECT completed_at FROM messages WHERE id = ?1)
                 WHERE id = (SELECT conversation_id FROM messages WHERE id = ?1)",
                [reply.0],
            )
            .map_err(fail(path))?;
        }
        tx.commit().map_err(fail(path))?;
        self.changed_reply(reply, changed)
    }

    fn changed_reply(&self, reply: MessageId, changed: usize) -> Result<()> {
        if changed == 0 {
            // Either no such message, or not a reply in progress: say which.
            self.message(reply)?;
            return Err(StoreError::NotAReply(reply));
        }
        Ok(())
    }

    /// Makes `message` the point the next turn continues from, so that turn starts a new
    /// branch beside the existing ones. Returns the message's conversation.
    pub fn fork(&mut self, message: MessageId) -> Result<ConversationId> {
        self.writable()?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail(path))?;
        let conversation = conversation_of(&tx, path, message)?;
        tx.execute(
            &format!("UPDATE conversations SET head_id = ?2, updated_at = {NOW} WHERE id = ?1"),
            params![conversation.0, message.0],
        )
        .map_err(fail(path))?;
        tx.commit().map_err(fail(path))?;
        Ok(conversation)
    }

    /// Where the next turn of `conversation` continues from (`None` when it has no messages).
    pub fn head(&self, conversation: ConversationId) -> Result<Option<MessageId>> {
        Ok(self.conversation(conversation)?.head)
    }

    /// One message, or [`StoreError::MessageNotFound`].
    pub fn message(&self, id: MessageId) -> Result<StoredMessage> {
        let mut message = self
            .conn
            .query_row(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"),
                [id.0],
                message_from_row,
            )
            .optional()
            .map_err(fail(&self.path))?
            .ok_or(StoreError::MessageNotFound(id))?;
        message.images = self.images_of(id)?;
        Ok(message)
    }

    /// All messages of a conversation, oldest first (parents before children).
    pub fn messages(&self, conversation: ConversationId) -> Result<Vec<StoredMessage>> {
        self.conversation(conversation)?;
        self.query_messages(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 ORDER BY id"
            ),
            conversation.0,
        )
    }

    /// The replies to (or edits after) `message`, oldest first; more than one means branches.
    pub fn children(&self, message: MessageId) -> Result<Vec<StoredMessage>> {
        self.message(message)?;
        self.query_messages(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE parent_id = ?1 ORDER BY id"),
            message.0,
        )
    }

    /// The branch from the root down to `message`, root first.
    pub fn path_to(&self, message: MessageId) -> Result<Vec<StoredMessage>> {
        self.message(message)?;
        self.query_messages(
            &format!(
                "WITH RECURSIVE up(id, depth) AS (
                     SELECT ?1, 0
                     UNION ALL
                     SELECT m.parent_id, up.depth + 1 FROM messages m JOIN up ON m.id = up.id
                     WHERE m.parent_id IS NOT NULL
                 )
                 SELECT {MESSAGE_COLUMNS} FROM messages JOIN up USING (id) ORDER BY up.depth DESC"
            ),
            message.0,
        )
    }

    /// What to send an engine to continue after `message`: the system prompt, then the branch
    /// up to `message`. Replies with no text (failed before their first token, or still
    /// unfinished) are left out, since they carry nothing for the model to read, and so are
    /// refused messages (see [`StoredMessage::is_context`]).
    pub fn replay(&self, message: MessageId) -> Result<Vec<Message>> {
        let path = self.path_to(message)?;
        let system = match path.first() {
            Some(first) => self.conversation(first.conversation)?.system,
            None => None,
        };
        let mut out: Vec<Message> = system
            .map(|s| Message::new(Role::System, s))
            .into_iter()
            .collect();
        out.extend(
            path.iter()
                .filter(|m| m.is_context())
                .map(StoredMessage::message),
        );
        Ok(out)
    }

    /// Marks a user message as refused by the model for being longer than the context (or,
    /// with `false`, clears the mark once it has been answered after all).
    pub fn set_refused(&mut self, message: MessageId, refused: bool) -> Result<()> {
        self.writable()?;
        let changed = self
            .conn
            .execute(
                "UPDATE messages SET refused = ?2 WHERE id = ?1 AND role = 'user'",
                params![message.0, refused],
            )
            .map_err(fail(&self.path))?;
        if changed == 0 {
            self.message(message)?;
            return Err(StoreError::NotAUserMessage(message));
        }
        Ok(())
    }

    fn query_messages(&self, sql: &str, arg: i64) -> Result<Vec<StoredMessage>> {
        let mut stmt = self.conn.prepare(sql).map_err(fail(&self.path))?;
        let rows = stmt
            .query_map([arg], message_from_row)
            .map_err(fail(&self.path))?;
        let mut messages = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail(&self.path))?;
        drop(stmt);
        for m in messages.iter_mut().filter(|m| m.role == Role::User) {
            m.images = self.images_of(m.id)?;
        }
        Ok(messages)
    }
}

/// Refuses a parent that does not exist or lives in another conversation.
fn check_parent(
    conn: &Connection,
    path: &Path,
    conversation: ConversationId,
    parent: Option<MessageId>,
) -> Result<()> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1)",
            [conversation.0],
            |r| r.get(0),
        )
        .map_err(fail(path))?;
    if !exists {
        return Err(StoreError::ConversationNotFound(conversation));
    }
    if let Some(parent) = parent {
        let actual = conversation_of(conn, path, parent)?;
        if actual != conversation {
            return Err(StoreError::WrongConversation {
                message: parent,
                expected: conversation,
                actual,
            });
        }
    }
    Ok(())
}

fn conversation_of(conn: &Connection, path: &Path, message: MessageId) -> Result<ConversationId> {
    conn.query_row(
        "SELECT conversation_id FROM messages WHERE id = ?1",
        [message.0],
        |r| r.get(0),
    )
    .optional()
    .map_err(fail(path))?
    .map(ConversationId)
    .ok_or(StoreError::MessageNotFound(message))
}

/// The first non-empty line of `text`, cut to [`TITLE_CHARS`] characters.
fn title_from(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut title: String = line.chars().take(TITLE_CHARS).collect();
    if line.chars().nth(TITLE_CHARS).is_some() {
        title.push('…');
    }
    Some(title)
}

fn params_json(params: &SamplingParams) -> Option<String> {
    serde_json::to_string(params).ok()
}

const CONVERSATION_COLUMNS: &str =
    "id, title, created_at, updated_at, model, system, head_id, source, client, batch_id, batch_line";

fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: ConversationId(row.get(0)?),
        title: row.get(1)?,
        created_at: row.get(2)?,
        updated_at: row.get(3)?,
        model: row.get(4)?,
        system: row.get(5)?,
        head: row.get::<_, Option<i64>>(6)?.map(MessageId),
        origin: origin_from_row(row)?,
    })
}

/// Columns 7–10 of [`CONVERSATION_COLUMNS`]: the origin, when the row has a source.
fn origin_from_row(row: &Row<'_>) -> rusqlite::Result<Option<Origin>> {
    let Some(source) = row.get::<_, Option<String>>(7)? else {
        return Ok(None);
    };
    let source = Source::parse(&source)
        .ok_or_else(|| bad_column(7, format!("unknown source {source:?}")))?;
    let batch = match (
        row.get::<_, Option<String>>(9)?,
        row.get::<_, Option<String>>(10)?,
    ) {
        (Some(batch_id), Some(line_id)) => Some(BatchLine { batch_id, line_id }),
        _ => None,
    };
    Ok(Some(Origin {
        source,
        client: row.get(8)?,
        batch,
    }))
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, parent_id, role, content, model, engine, backend, parameters,
    prompt_tokens, cached_tokens, completion_tokens,
    queue_ms, ttft_ms, prefill_tokens_per_s, decode_tokens_per_s, total_ms,
    finish_reason, error, created_at, completed_at, refused";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let role: String = row.get(3)?;
    let role = Role::parse(&role).ok_or_else(|| bad_column(3, format!("unknown role {role:?}")))?;
    let params: Option<String> = row.get(8)?;
    let usage = match row.get::<_, Option<u32>>(9)? {
        Some(prompt_tokens) => Some(Usage {
            prompt_tokens,
            cached_tokens: row.get::<_, Option<u32>>(10)?.unwrap_or(0),
            completion_tokens: row.get::<_, Option<u32>>(11)?.unwrap_or(0),
        }),
        None => None,
    };
    let timings = match row.get::<_, Option<f64>>(13)? {
        Some(ttft_ms) => Some(Timings {
            queue_ms: row.get::<_, Option<f64>>(12)?.unwrap_or(0.0),
            ttft_ms,
            prefill_tokens_per_s: row.get::<_, Option<f64>>(14)?.unwrap_or(0.0),
            decode_tokens_per_s: row.get::<_, Option<f64>>(15)?.unwrap_or(0.0),
            total_ms: row.get::<_, Option<f64>>(16)?.unwrap_or(0.0),
        }),
        None => None,
    };
    let finish: Option<String> = row.get(17)?;
    let finish_reason = match finish {
        Some(text) => Some(
            FinishReason::parse(&text)
                .ok_or_else(|| bad_column(17, format!("unknown finish reason {text:?}")))?,
        ),
        None => None,
    };
    Ok(StoredMessage {
        id: MessageId(row.get(0)?),
        conversation: ConversationId(row.get(1)?),
        parent: row.get::<_, Option<i64>>(2)?.map(MessageId),
        role,
        content: row.get(4)?,
        model: row.get(5)?,
        engine: row.get(6)?,
        backend: row.get(7)?,
        // Parameters are informational: a value this build cannot read is shown as absent
        // rather than making the whole conversation unreadable.
        params: params.and_then(|p| serde_json::from_str(&p).ok()),
        usage,
        timings,
        finish_reason,
        error: row.get(18)?,
        created_at: row.get(19)?,
        completed_at: row.get(20)?,
        refused: row.get(21)?,
        images: Vec::new(),
    })
}

fn bad_column(index: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, reason.into())
}

#[cfg(test)]
pub(crate) mod tests;
