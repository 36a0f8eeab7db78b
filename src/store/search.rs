//! Full-text search over message text, with SQLite's FTS5.
//!
//! The index (`messages_fts`) is kept in step with `messages` by triggers in the schema, so a
//! deleted conversation disappears from search in the same transaction. What a user types is
//! never handed to FTS5's query language as is: `"`, `AND`, `*`, `NEAR(` and friends are
//! syntax there. Each word is quoted as a literal phrase and made a prefix match (`borrow`
//! finds "borrowing"); all words must appear. Matching ignores case and diacritics
//! (`cafe` finds "Café"). Scripts whose words are not separated by spaces (Chinese, Japanese)
//! are indexed as whole runs, so search them by the start of a run.

use rusqlite::params;
use serde::Serialize;

use super::{fail, ConversationId, MessageId, Result, Store, StoreError};
use crate::domain::Role;

/// Mark before a matched word in [`SearchHit::snippet`].
pub const MATCH_START: &str = "[";
/// Mark after a matched word in [`SearchHit::snippet`].
pub const MATCH_END: &str = "]";

/// Words of context a snippet keeps around the match.
const SNIPPET_WORDS: i64 = 12;

/// One message that matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The conversation the message is in.
    pub conversation: ConversationId,
    /// The message that matched.
    pub message: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// The model it was sent to or written by.
    pub model: Option<String>,
    /// When it was written: UTC RFC 3339 with milliseconds.
    pub created_at: String,
    /// The conversation's title.
    pub title: Option<String>,
    /// A piece of the text around the match, matched words in `[` `]`, cuts marked `…`.
    pub snippet: String,
}

/// Turns a user's words into an FTS5 query that cannot be a syntax error: every word a quoted
/// phrase (inner quotes doubled) with a prefix star. `None` when there is no word at all.
pub(crate) fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

impl Store {
    /// Messages containing all of `text`'s words, best matches first (newest first among
    /// equals). A query with no words is refused; one with only punctuation finds nothing.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>> {
        let Some(query) = fts_query(text) else {
            return Err(StoreError::BadQuery {
                query: text.to_string(),
                reason: "there is nothing to search for".into(),
            });
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.conversation_id, m.id, m.role, m.model, m.created_at, c.title,
                        snippet(messages_fts, 0, ?2, ?3, '…', ?4)
                 FROM messages_fts
                 JOIN messages m ON m.id = messages_fts.rowid
                 JOIN conversations c ON c.id = m.conversation_id
                 WHERE messages_fts MATCH ?1
                 ORDER BY rank, m.id DESC
                 LIMIT ?5",
            )
            .map_err(fail(&self.path))?;
        let rows = stmt.query_map(
            params![query, MATCH_START, MATCH_END, SNIPPET_WORDS, limit],
            |row| {
                let role: String = row.get(2)?;
                Ok(SearchHit {
                    conversation: ConversationId(row.get(0)?),
                    message: MessageId(row.get(1)?),
                    role: Role::parse(&role).unwrap_or(Role::User),
                    model: row.get(3)?,
                    created_at: row.get(4)?,
                    title: row.get(5)?,
                    snippet: row.get(6)?,
                })
            },
        );
        let rows = rows.and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| match e.sqlite_error_code() {
            // Quoting should make this unreachable; if FTS5 still objects, it is about the
            // query, not the database.
            Some(rusqlite::ErrorCode::Unknown) => StoreError::BadQuery {
                query: text.to_string(),
                reason: e.to_string(),
            },
            _ => fail(&self.path)(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{temp_store, turn};

    #[test]
    fn quoting_turns_syntax_into_words() {
        assert_eq!(
            fts_query("rust borrow").as_deref(),
            Some("\"rust\"* \"borrow\"*")
        );
        assert_eq!(
            fts_query("say \"hi\"").as_deref(),
            Some("\"say\"* \"\"\"hi\"\"\"*")
        );
        assert_eq!(fts_query("  \t\n"), None);
    }

    #[test]
    fn finds_words_prefixes_any_case_and_diacritics() {
        let (_dir, mut store) = temp_store();
        let (c, _) = turn(
            &mut store,
            None,
            "Tell me about the Borrow checker",
            "It prevents data races.",
        );
        let (d, _) = turn(&mut store, None, "Un café, s'il vous plaît", "Voilà.");
        let hits = store.search("borrow", 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].conversation, c);
        assert_eq!(hits[0].role, Role::User);
        assert!(hits[0].snippet.contains("[Borrow]"), "{}", hits[0].snippet);
        assert_eq!(store.search("BORR", 10).unwrap().len(), 1, "prefix match");
        assert_eq!(
            store.search("cafe", 10).unwrap()[0].conversation,
            d,
            "diacritics ignored"
        );
        assert_eq!(
            store.search("data races", 10).unwrap()[0].role,
            Role::Assistant
        );
        assert!(
            store.search("borrow races nowhere", 10).unwrap().is_empty(),
            "all words must match"
        );
    }

    #[test]
    fn hostile_queries_are_words_not_syntax() {
        let (_dir, mut store) = temp_store();
        turn(
            &mut store,
            None,
            "AND OR NOT are operators; so is NEAR(a b) and col:umn",
            "a * b = c \"quoted\"",
        );
        for q in [
            "\"", "\"\"", "AND", "OR", "NOT", "*", "NEAR(", "col:umn", "(", ")", "^", "-", "a\"b",
            "'", "{x}", "🎉", "\\",
        ] {
            let result = store.search(q, 10);
            assert!(result.is_ok(), "query {q:?}: {result:?}");
        }
        assert_eq!(
            store.search("AND", 10).unwrap().len(),
            1,
            "AND is a word here"
        );
        assert_eq!(store.search("near(a", 10).unwrap().len(), 1);
        assert_eq!(store.search("quoted\"", 10).unwrap().len(), 1);
        assert!(matches!(
            store.search("  ", 10),
            Err(StoreError::BadQuery { .. })
        ));
    }

    #[test]
    fn unicode_words_are_found() {
        let (_dir, mut store) = temp_store();
        turn(&mut store, None, "Привет, как дела?", "Straße und Größe");
        turn(&mut store, None, "日本語の文章", "ok");
        assert_eq!(
            store.search("привет", 10).unwrap().len(),
            1,
            "Cyrillic, any case"
        );
        assert_eq!(store.search("größe", 10).unwrap().len(), 1);
        assert_eq!(
            store.search("日本語", 10).unwrap().len(),
            1,
            "the start of a CJK run"
        );
    }

    #[test]
    fn deleted_and_replaced_text_leaves_the_index() {
        let (_dir, mut store) = temp_store();
        let (gone, _) = turn(&mut store, None, "zebra question", "striped answer");
        let (keep, _) = turn(&mut store, None, "another zebra", "fine");
        assert_eq!(store.search("zebra", 10).unwrap().len(), 2);
        // `turn` saves a partial "draft" before finishing: the final text replaces it.
        assert!(store.search("draft", 10).unwrap().is_empty());
        assert_eq!(store.search("striped", 10).unwrap().len(), 1);
        store.delete_conversation(gone).unwrap();
        let hits = store.search("zebra", 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].conversation, keep);
        assert!(store.search("striped", 10).unwrap().is_empty());
    }

    #[test]
    fn limit_is_respected() {
        let (_dir, mut store) = temp_store();
        for i in 0..5 {
            turn(&mut store, None, &format!("walrus number {i}"), "ok");
        }
        assert_eq!(store.search("walrus", 3).unwrap().len(), 3);
    }
}
