//! Export of one conversation as Markdown (to read) or JSONL (to keep, or to import again), and
//! the import of JSONL.
//!
//! JSONL is lossless: a `{"type":"conversation",…}` line, then one `{"type":"message",…}` line
//! per message, parents before children, every stored field included. Import gives the
//! conversations new ids (ids belong to the database they live in), keeps timestamps and the
//! tree, and is all-or-nothing: the whole input is one transaction, so a failed or killed
//! import leaves no half conversation behind. Several exports concatenated import as several
//! conversations.
//!
//! Markdown shows the whole tree in reading order; where it branches, each branch is announced
//! with the message it continues from. No stored text can change the document's structure:
//! message texts, the system prompt and errors are fenced code blocks whose fence is longer than
//! any run of backticks inside them (so nothing in them can close it, and inside a code block
//! nothing else is syntax), and titles and model names are escaped onto one line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::tree::{depth_first, Branch};
use super::{
    fail, Conversation, ConversationId, MessageId, Result, Store, StoreError, StoredMessage,
};
use crate::domain::{utf8, FinishReason, Role};

/// Version of the JSONL layout, written on every conversation line.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Conversation {
        format_version: u32,
        #[serde(flatten)]
        conversation: Conversation,
    },
    Message(StoredMessage),
}

/// What an import created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportSummary {
    /// The new ids of the imported conversations, in file order.
    pub conversations: Vec<ConversationId>,
    /// Messages imported, in all conversations.
    pub messages: usize,
}

/// The facts shown next to a message: model, finish reason, tokens, speed; for a user message
/// the model refused, that it was.
pub fn message_facts(m: &StoredMessage) -> Vec<String> {
    let mut facts = Vec::new();
    if m.refused {
        facts.push("refused: longer than the context, not sent again".to_string());
    }
    if m.role == Role::Assistant {
        if let Some(model) = &m.model {
            facts.push(model.clone());
        }
        facts.push(
            m.finish_reason
                .map_or("unfinished", FinishReason::as_str)
                .to_string(),
        );
        if let Some(usage) = &m.usage {
            facts.push(format!("{} tokens", usage.completion_tokens));
        }
        if let Some(t) = &m.timings {
            if t.decode_tokens_per_s > 0.0 {
                facts.push(format!("{:.1} tokens/s", t.decode_tokens_per_s));
            }
            facts.push(format!("first token {:.0} ms", t.ttft_ms));
        }
    }
    facts
}

/// "branch 2 of 3 after #5" (or "root 2 of 3").
pub fn branch_label(branch: &Branch) -> String {
    match branch.from {
        Some(from) => format!("branch {} of {} after #{from}", branch.index, branch.count),
        None => format!("root {} of {}", branch.index, branch.count),
    }
}

impl Store {
    /// The conversation as JSONL, one record a line, ending in a newline.
    pub fn export_jsonl(&self, id: ConversationId) -> Result<String> {
        let conversation = self.conversation(id)?;
        let messages = self.messages(id)?;
        let mut out = String::new();
        let head = Line::Conversation {
            format_version: FORMAT_VERSION,
            conversation,
        };
        push_json(&mut out, &head);
        for m in messages {
            push_json(&mut out, &Line::Message(m));
        }
        Ok(out)
    }

    /// The conversation as a Markdown document.
    pub fn export_markdown(&self, id: ConversationId) -> Result<String> {
        let c = self.conversation(id)?;
        let messages = self.messages(id)?;
        let mut out = String::new();
        let title = match &c.title {
            Some(title) => inline(title),
            None => format!("Conversation {}", c.id),
        };
        let _ = writeln!(out, "# {title}\n");
        let _ = write!(
            out,
            "Conversation {} · created {} · updated {}",
            c.id,
            inline(&c.created_at),
            inline(&c.updated_at)
        );
        if let Some(model) = &c.model {
            let _ = write!(out, " · last model {}", inline(model));
        }
        out.push_str("\n\n");
        if let Some(system) = &c.system {
            out.push_str("**System prompt:**\n\n");
            code_block(&mut out, system);
        }
        for visit in depth_first(&messages) {
            let m = visit.message;
            if let Some(branch) = &visit.branch {
                let _ = writeln!(out, "---\n\n*{}*\n", branch_label(branch));
            }
            let who = match m.role {
                Role::User => "You",
                Role::Assistant => "Model",
                Role::System => "System",
            };
            let mut heading = format!("### {who} · #{} · {}", m.id, inline(&m.created_at));
            for fact in message_facts(m) {
                heading.push_str(" · ");
                heading.push_str(&inline(&fact));
            }
            let _ = writeln!(out, "{heading}\n");
            for image in &m.images {
                image_line(&mut out, image);
            }
            if !m.content.is_empty() {
                code_block(&mut out, &m.content);
            }
            if let Some(error) = &m.error {
                out.push_str("**Error:**\n\n");
                code_block(&mut out, error);
            }
        }
        Ok(out)
    }

    /// Imports JSONL written by [`Store::export_jsonl`] (one or several exports concatenated),
    /// in one transaction. `source_name` names the input in error messages.
    pub fn import_jsonl(
        &mut self,
        input: impl BufRead,
        source_name: &str,
    ) -> Result<ImportSummary> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail(path))?;
        let mut importer = Importer {
            conn: &tx,
            path,
            source_name,
            current: None,
            summary: ImportSummary {
                conversations: Vec::new(),
                messages: 0,
            },
        };
        for (index, line) in input.split(b'\n').enumerate() {
            let line = line.map_err(|e| StoreError::ImportRead {
                source_name: source_name.to_string(),
                reason: e.to_string(),
            })?;
            // Bytes first, so a line that is not UTF-8 is named with where it goes wrong.
            let line =
                utf8::decode(line, "it").map_err(|reason| importer.bad(index + 1, reason))?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Line =
                serde_json::from_str(&line).map_err(|e| importer.bad(index + 1, e.to_string()))?;
            importer.record(index + 1, record)?;
        }
        importer.close_conversation()?;
        if importer.summary.conversations.is_empty() {
            return Err(StoreError::ImportRead {
                source_name: source_name.to_string(),
                reason: "it holds no conversation".into(),
            });
        }
        let summary = importer.summary;
        tx.commit().map_err(fail(path))?;
        Ok(summary)
    }
}

/// Appends `text` as a fenced code block and a blank line. The fence is a run of backticks one
/// longer than the longest run inside the text (at least three): only a line holding at least as
/// many backticks could close it, so the text cannot end the block early, and inside the block
/// no heading, list, HTML or fence of the text is syntax.
/// An image of a message, shown where the Markdown is read (the history's copy, else the user's
/// file) and described: name, media type, size, dimensions, SHA-256.
fn image_line(out: &mut String, image: &crate::domain::Image) {
    let _ = write!(out, "**Image:** {}", inline(&image.summary()));
    let _ = write!(out, " · SHA-256 {}", inline(&image.sha256));
    if let Some(file) = image.file() {
        let _ = write!(
            out,
            "\n\n![{}](<{}>)",
            inline(&image.label()),
            link_target(&file.to_string_lossy())
        );
    }
    out.push_str("\n\n");
}

/// A file path as the target of a Markdown link in angle brackets: the characters that would
/// end it (angle brackets, line breaks, other controls) and the percent sign itself are
/// percent-encoded, which readers decode back.
fn link_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_control() || matches!(c, '<' | '>' | '%' | '\\') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn code_block(out: &mut String, text: &str) {
    let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
    out.push_str(&fence);
    out.push('\n');
    out.push_str(text);
    if !text.ends_with(['\n', '\r']) {
        out.push('\n');
    }
    out.push_str(&fence);
    out.push_str("\n\n");
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` made safe inside one line of Markdown (a heading, a paragraph): line breaks and other
/// control characters become spaces, and every character with an inline meaning is escaped with
/// a backslash, so the text reads as written and starts or ends nothing.
fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push(' ');
            continue;
        }
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '['
                | ']'
                | '<'
                | '>'
                | '&'
                | '!'
                | '~'
                | '|'
                | '#'
                | '{'
                | '}'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn push_json(out: &mut String, line: &Line) {
    // Serialising our own plain structs cannot fail.
    if let Ok(text) = serde_json::to_string(line) {
        out.push_str(&text);
        out.push('\n');
    }
}

/// The conversation an import is filling in.
struct Current {
    id: ConversationId,
    /// Exported message id → new id.
    ids: HashMap<MessageId, MessageId>,
    exported_head: Option<MessageId>,
    last: Option<MessageId>,
}

struct Importer<'a> {
    conn: &'a Connection,
    path: &'a std::path::Path,
    source_name: &'a str,
    current: Option<Current>,
    summary: ImportSummary,
}

impl Importer<'_> {
    fn bad(&self, line: usize, reason: String) -> StoreError {
        StoreError::Import {
            source_name: self.source_name.to_string(),
            line,
            reason,
        }
    }

    fn record(&mut self, line: usize, record: Line) -> Result<()> {
        match record {
            Line::Conversation {
                format_version,
                conversation,
            } => {
                if format_version > FORMAT_VERSION {
                    return Err(self.bad(line, format!("its format version {format_version} is newer than this gemmactl reads ({FORMAT_VERSION})")));
                }
                self.close_conversation()?;
                let created = self.timestamp(line, &conversation.created_at)?;
                let updated = self.timestamp(line, &conversation.updated_at)?;
                self.conn
                    .execute(
                        "INSERT INTO conversations (title, created_at, updated_at, model, system, source, client, batch_id, batch_line)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            conversation.title,
                            created,
                            updated,
                            conversation.model,
                            conversation.system,
                            conversation.origin.as_ref().map(|o| o.source.as_str()),
                            conversation.origin.as_ref().and_then(|o| o.client.clone()),
                            conversation.origin.as_ref().and_then(|o| o.batch.as_ref()).map(|b| b.batch_id.clone()),
                            conversation.origin.as_ref().and_then(|o| o.batch.as_ref()).map(|b| b.line_id.clone()),
                        ],
                    )
                    .map_err(fail(self.path))?;
                let id = ConversationId(self.conn.last_insert_rowid());
                self.summary.conversations.push(id);
                self.current = Some(Current {
                    id,
                    ids: HashMap::new(),
                    exported_head: conversation.head,
                    last: None,
                });
                Ok(())
            }
            Line::Message(m) => self.message(line, m),
        }
    }

    fn message(&mut self, line: usize, m: StoredMessage) -> Result<()> {
        let Some(current) = &self.current else {
            return Err(self.bad(line, "a message comes before any conversation line".into()));
        };
        let parent = match m.parent {
            None => None,
            Some(p) => match current.ids.get(&p) {
                Some(new) => Some(*new),
                None => return Err(self.bad(line, format!("message {} names parent {p}, which does not come before it in this conversation", m.id))),
            },
        };
        let created = self.timestamp(line, &m.created_at)?;
        let completed = match &m.completed_at {
            Some(t) => Some(self.timestamp(line, t)?),
            None => None,
        };
        let usage = m.usage.as_ref();
        let timings = m.timings.as_ref();
        self.conn
            .execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, model, engine, backend, parameters,
                     prompt_tokens, cached_tokens, completion_tokens,
                     queue_ms, ttft_ms, prefill_tokens_per_s, decode_tokens_per_s, total_ms,
                     finish_reason, error, created_at, completed_at, refused)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                params![
                    current.id.0,
                    parent.map(|p| p.0),
                    m.role.as_str(),
                    m.content,
                    m.model,
                    m.engine,
                    m.backend,
                    m.params.as_ref().and_then(|p| serde_json::to_string(p).ok()),
                    usage.map(|u| u.prompt_tokens),
                    usage.map(|u| u.cached_tokens),
                    usage.map(|u| u.completion_tokens),
                    timings.map(|t| t.queue_ms),
                    timings.map(|t| t.ttft_ms),
                    timings.map(|t| t.prefill_tokens_per_s),
                    timings.map(|t| t.decode_tokens_per_s),
                    timings.map(|t| t.total_ms),
                    m.finish_reason.map(FinishReason::as_str),
                    m.error,
                    created,
                    completed,
                    m.refused && m.role == Role::User,
                ],
            )
            .map_err(fail(self.path))?;
        let new = MessageId(self.conn.last_insert_rowid());
        if m.role == Role::User {
            super::images::insert_images(self.conn, new, &m.images).map_err(fail(self.path))?;
        }
        if let Some(current) = &mut self.current {
            if current.ids.insert(m.id, new).is_some() {
                return Err(self.bad(
                    line,
                    format!("message id {} appears twice in one conversation", m.id),
                ));
            }
            current.last = Some(new);
        }
        self.summary.messages += 1;
        Ok(())
    }

    /// Points the finished conversation's head where the export's pointed (else its newest).
    fn close_conversation(&mut self) -> Result<()> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let head = current
            .exported_head
            .and_then(|h| current.ids.get(&h).copied())
            .or(current.last);
        self.conn
            .execute(
                "UPDATE conversations SET head_id = ?2 WHERE id = ?1",
                params![current.id.0, head.map(|h| h.0)],
            )
            .map_err(fail(self.path))?;
        Ok(())
    }

    /// Normalises an RFC 3339 timestamp to UTC with milliseconds; refuses anything else.
    fn timestamp(&self, line: usize, text: &str) -> Result<String> {
        let normal: Option<String> = self
            .conn
            .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1)", [text], |r| {
                r.get(0)
            })
            .optional()
            .map_err(fail(self.path))?
            .flatten();
        normal.ok_or_else(|| self.bad(line, format!("{text:?} is not an RFC 3339 timestamp")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{temp_store, turn};

    #[test]
    fn jsonl_has_a_conversation_line_then_every_message() {
        let (_dir, mut store) = temp_store();
        let (c, _) = turn(&mut store, None, "hello", "hi there");
        let text = store.export_jsonl(c).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "conversation");
        assert_eq!(lines[0]["format_version"], 1);
        assert_eq!(lines[0]["title"], "hello");
        assert_eq!(lines[1]["type"], "message");
        assert_eq!(lines[1]["role"], "user");
        assert_eq!(lines[1]["parent"], serde_json::Value::Null);
        assert_eq!(lines[2]["role"], "assistant");
        assert_eq!(lines[2]["content"], "hi there");
        assert_eq!(lines[2]["finish_reason"], "stop");
        assert_eq!(lines[2]["parent"], lines[1]["id"]);
        assert_eq!(lines[2]["usage"]["completion_tokens"], 3);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn jsonl_round_trips_through_import() {
        let (_dir, mut store) = temp_store();
        let (c, reply) = turn(&mut store, None, "first question", "first answer");
        store.set_system(c, Some("be brief")).unwrap();
        turn(&mut store, Some(c), "second question", "second answer");
        // A sibling branch after the first reply, left as the head.
        store.fork(reply).unwrap();
        turn(&mut store, Some(c), "other question", "other answer");
        store.fork(reply).unwrap();
        let exported = store.export_jsonl(c).unwrap();

        let summary = store.import_jsonl(exported.as_bytes(), "test").unwrap();
        assert_eq!(summary.messages, 6);
        let copy = summary.conversations[0];
        assert_ne!(copy, c);
        let again = store.export_jsonl(copy).unwrap();
        // Identical but for the ids.
        let strip = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    for key in ["id", "conversation", "parent", "head"] {
                        if let Some(x) = v.get_mut(key) {
                            *x = serde_json::Value::Bool(x.is_null());
                        }
                    }
                    v
                })
                .collect()
        };
        assert_eq!(strip(&exported), strip(&again));
        // The tree and the head survive with the new ids.
        let head = store.head(copy).unwrap().unwrap();
        assert_eq!(store.children(head).unwrap().len(), 2);
        assert_eq!(store.message(head).unwrap().content, "first answer");
    }

    #[test]
    fn import_is_all_or_nothing() {
        let (_dir, mut store) = temp_store();
        let (c, _) = turn(&mut store, None, "hello", "hi");
        let mut text = store.export_jsonl(c).unwrap();
        text.push_str("{\"type\":\"message\",\"oops\":1}\n");
        let err = store
            .import_jsonl(text.as_bytes(), "broken.jsonl")
            .unwrap_err();
        assert!(matches!(err, StoreError::Import { line: 4, .. }), "{err}");
        assert!(err.to_string().contains("broken.jsonl"), "{err}");
        assert_eq!(store.list_conversations(10, None).unwrap().len(), 1);
    }

    #[test]
    fn import_refuses_bad_records() {
        let (_dir, mut store) = temp_store();
        let cases = [
            ("", "no conversation"),
            ("not json\n", "line 1"),
            ("{\"type\":\"message\",\"id\":1,\"conversation\":1,\"parent\":null,\"role\":\"user\",\"content\":\"x\",\"created_at\":\"2025-01-01T00:00:00Z\"}\n", "before any conversation"),
            ("{\"type\":\"conversation\",\"format_version\":1,\"id\":1,\"created_at\":\"yesterday\",\"updated_at\":\"2025-01-01T00:00:00Z\"}\n", "RFC 3339"),
            ("{\"type\":\"conversation\",\"format_version\":99,\"id\":1,\"created_at\":\"2025-01-01T00:00:00Z\",\"updated_at\":\"2025-01-01T00:00:00Z\"}\n", "newer"),
        ];
        for (input, expected) in cases {
            let err = store
                .import_jsonl(input.as_bytes(), "x.jsonl")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
        assert!(store.list_conversations(10, None).unwrap().is_empty());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named_with_its_offset() {
        let (_dir, mut store) = temp_store();
        let (c, _) = turn(&mut store, None, "hello", "hi");
        let mut bytes = store.export_jsonl(c).unwrap().into_bytes();
        bytes.extend_from_slice(b"{\"type\":\"message\",\"content\":\"Caf\xE9\"}\n");
        let err = store
            .import_jsonl(&bytes[..], "latin1.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4 of latin1.jsonl"), "{err}");
        assert!(
            err.contains("not valid UTF-8") && err.contains("0xE9"),
            "{err}"
        );
        assert_eq!(store.list_conversations(10, None).unwrap().len(), 1);
    }

    #[test]
    fn import_keeps_timestamps_in_utc() {
        let (_dir, mut store) = temp_store();
        let input = "{\"type\":\"conversation\",\"format_version\":1,\"id\":7,\"title\":\"t\",\"created_at\":\"2025-03-01T10:00:00+02:00\",\"updated_at\":\"2025-03-01T10:00:00Z\"}\n\
                     {\"type\":\"message\",\"id\":70,\"conversation\":7,\"parent\":null,\"role\":\"user\",\"content\":\"hi\",\"created_at\":\"2025-03-01T10:00:00.5Z\"}\n";
        let summary = store.import_jsonl(input.as_bytes(), "x").unwrap();
        let c = store.conversation(summary.conversations[0]).unwrap();
        assert_eq!(c.created_at, "2025-03-01T08:00:00.000Z");
        assert_eq!(
            store.messages(c.id).unwrap()[0].created_at,
            "2025-03-01T10:00:00.500Z"
        );
    }

    #[test]
    fn markdown_shows_every_branch_and_how_replies_ended() {
        let (_dir, mut store) = temp_store();
        let (c, reply) = turn(&mut store, None, "What is Rust?", "A language.");
        store.set_system(c, Some("Answer briefly.")).unwrap();
        store.fork(reply).unwrap();
        turn(&mut store, Some(c), "Branch one", "One.");
        store.fork(reply).unwrap();
        let head = store.head(c).unwrap();
        let user = store
            .add_user_message(c, head, "Branch two", "m", &Default::default())
            .unwrap();
        let cut = store.start_reply(user, "m", &Default::default()).unwrap();
        store
            .finish_reply(
                cut,
                &crate::store::ReplyEnd {
                    text: "Half".into(),
                    finish_reason: FinishReason::Cancelled,
                    usage: None,
                    timings: None,
                    engine: None,
                    backend: None,
                    error: None,
                },
            )
            .unwrap();
        let md = store.export_markdown(c).unwrap();
        assert!(md.starts_with("# What is Rust?\n"), "{md}");
        assert!(md.contains("```\nAnswer briefly.\n```"), "{md}");
        assert!(
            md.contains(&format!("*branch 1 of 2 after #{reply}*")),
            "{md}"
        );
        assert!(
            md.contains(&format!("*branch 2 of 2 after #{reply}*")),
            "{md}"
        );
        assert!(
            md.contains("Branch one") && md.contains("Branch two"),
            "{md}"
        );
        assert!(md.contains("· cancelled"), "{md}");
        // Reading order: the first branch's reply comes before the second branch starts.
        assert!(
            md.find("One.").unwrap() < md.find("Branch two").unwrap(),
            "{md}"
        );
    }

    /// What a CommonMark parser sees at the top level of a document: each block's kind, with
    /// the text of headings and code blocks.
    #[derive(Debug, PartialEq)]
    enum Block {
        Heading(u8, String),
        Code(String),
        Paragraph,
        Rule,
        Other(String),
    }

    fn top_level_blocks(md: &str, options: pulldown_cmark::Options) -> Vec<Block> {
        use pulldown_cmark::{Event, Parser, Tag, TagEnd};
        let mut blocks = Vec::new();
        let mut depth = 0usize;
        let mut text = String::new();
        for event in Parser::new_ext(md, options) {
            match event {
                Event::Start(tag) => {
                    if depth == 0 {
                        text.clear();
                        match &tag {
                            Tag::Heading { .. } | Tag::CodeBlock(_) | Tag::Paragraph => {}
                            other => blocks.push(Block::Other(format!("{other:?}"))),
                        }
                    }
                    depth += 1;
                }
                Event::End(end) => {
                    depth -= 1;
                    if depth == 0 {
                        match end {
                            TagEnd::Heading(level) => {
                                blocks.push(Block::Heading(level as u8, text.clone()))
                            }
                            TagEnd::CodeBlock => blocks.push(Block::Code(text.clone())),
                            TagEnd::Paragraph => blocks.push(Block::Paragraph),
                            _ => {}
                        }
                    }
                }
                Event::Text(t) | Event::Code(t) => text.push_str(&t),
                Event::Rule if depth == 0 => blocks.push(Block::Rule),
                Event::Html(h) | Event::InlineHtml(h) if depth == 0 => {
                    blocks.push(Block::Other(format!("html {h:?}")))
                }
                _ => {}
            }
        }
        blocks
    }

    /// A text as a code block holds it: ending in a line break.
    fn as_parsed(text: &str) -> String {
        let mut t = text.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        t
    }

    #[test]
    fn no_stored_text_can_change_the_markdown_structure() {
        let hostile = [
            "```\nan unclosed fence swallowing what follows",
            "~~~\nan unclosed tilde fence",
            "`````````` ten backticks, then ``` three",
            "### You · #1 · a fake turn header\n# and a title",
            "Some text\n===\nthat a setext underline would make a heading\n---",
            "---\n***\n- a list\n1. a numbered item\n[^1]: a footnote",
            "<!-- an unclosed HTML comment",
            "<details>\n<summary>an unclosed details block",
            "<script>alert(1)</script>",
            "> a quote\n>> a deeper one",
            "[ref]: https://example.com/\n[ref] and ![img](x.png)",
            "    indented code\n\ta tab",
            "one\rtwo after a lone CR\r```\r### You",
            "| a | b |\n|---|---|\n| c | d |",
            "nul \0 and \u{1b}[31m escape, trailing backslash \\",
        ];
        let (_dir, mut store) = temp_store();
        let c = store
            .create_conversation(
                Some("```\n# a system prompt with an unclosed fence\r<!--"),
                &crate::domain::Origin::new(crate::domain::Source::Chat),
            )
            .unwrap();
        let mut parent = None;
        let mut contents = Vec::new();
        for (i, text) in hostile.iter().enumerate() {
            let id = if i % 2 == 0 {
                store
                    .add_user_message(c, parent, text, "m`*#{x}\n", &Default::default())
                    .unwrap()
            } else {
                let reply = store
                    .start_reply(parent.unwrap(), "m", &Default::default())
                    .unwrap();
                store
                    .finish_reply(
                        reply,
                        &crate::store::ReplyEnd {
                            text: text.to_string(),
                            finish_reason: FinishReason::Error,
                            usage: None,
                            timings: None,
                            engine: None,
                            backend: None,
                            error: Some("engine said:\n```\n### Model".into()),
                        },
                    )
                    .unwrap();
                reply
            };
            contents.push(text.to_string());
            parent = Some(id);
        }
        store
            .set_title(c, "```\n# not the title <!-- *x* [a](b) #")
            .unwrap();
        let md = store.export_markdown(c).unwrap();

        let mut expected_code = vec![as_parsed(
            "```\n# a system prompt with an unclosed fence\r<!--",
        )];
        for (i, text) in contents.iter().enumerate() {
            expected_code.push(as_parsed(text));
            if i % 2 == 1 {
                expected_code.push(as_parsed("engine said:\n```\n### Model"));
            }
        }
        use pulldown_cmark::Options;
        let gfm = Options::ENABLE_TABLES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_HEADING_ATTRIBUTES;
        for options in [Options::empty(), gfm] {
            let blocks = top_level_blocks(&md, options);
            let others: Vec<&Block> = blocks
                .iter()
                .filter(|b| matches!(b, Block::Other(_)))
                .collect();
            assert!(others.is_empty(), "unexpected blocks {others:?} in\n{md}");
            let headings: Vec<&Block> = blocks
                .iter()
                .filter(|b| matches!(b, Block::Heading(..)))
                .collect();
            assert_eq!(
                headings[0],
                &Block::Heading(1, "``` # not the title <!-- *x* [a](b) #".into()),
                "{md}"
            );
            assert_eq!(
                headings.len(),
                1 + hostile.len(),
                "one heading per message:\n{md}"
            );
            assert!(headings[1..]
                .iter()
                .all(|h| matches!(h, Block::Heading(3, t) if t.contains(" · #"))));
            let code: Vec<String> = blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Code(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                code, expected_code,
                "every text is one code block, verbatim:\n{md}"
            );
        }
    }
}
