//! Full-text search over message text, with SQLite's FTS5.
//!
//! Two indexes are kept in step with `messages` by triggers in the schema, so a deleted
//! conversation disappears from search in the same transaction:
//! - `messages_fts` indexes words (`unicode61`): matching ignores case and diacritics (`cafe`
//!   finds "Café"), and a word also finds the longer words it starts (`borrow` finds
//!   "borrowing").
//! - `messages_trigram` indexes every three-character substring. It serves scripts written
//!   without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar), which the word
//!   index can only see as one long run: a query word in such a script is found anywhere inside
//!   a message (`苹果` in "我喜欢吃苹果和香蕉。"). Words of one or two characters are shorter
//!   than a trigram and are matched by a scan of the message texts instead.
//!
//! What a user types is never handed to FTS5's query language as is: `"`, `AND`, `*`, `NEAR(`
//! and friends are syntax there. Each word is quoted as a literal phrase; all words must appear.

use rusqlite::params_from_iter;
use rusqlite::types::Value;
use serde::Serialize;

use super::{fail, ConversationId, MessageId, Result, Store, StoreError};
use crate::domain::Role;

/// Mark before a matched word in [`SearchHit::snippet`].
pub const MATCH_START: &str = "[";
/// Mark after a matched word in [`SearchHit::snippet`].
pub const MATCH_END: &str = "]";

/// Words of context a snippet keeps around the match.
const SNIPPET_WORDS: i64 = 12;
/// Characters of context a snippet keeps around a match found by scanning.
const SNIPPET_CHARS: usize = 24;

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
    let words: Vec<String> = text.split_whitespace().map(|w| phrase(w, "*")).collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// `word` as an FTS5 string literal, followed by `suffix`.
fn phrase(word: &str, suffix: &str) -> String {
    format!("\"{}\"{suffix}", word.replace('"', "\"\""))
}

/// Whether `c` belongs to a script whose words are written without spaces between them.
pub(crate) fn is_spaceless(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x19E0..=0x19FF    // Khmer symbols
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3005..=0x3007    // 々 〆 〇
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // halfwidth Katakana
        | 0x20000..=0x3134F  // CJK extensions B to G
    )
}

/// A query split by how each word is found.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Words found as whole words or word starts, as one FTS5 query for `messages_fts`.
    words: Option<String>,
    /// Words in a spaceless script of three characters or more, as one query for
    /// `messages_trigram` (substrings).
    substrings: Option<String>,
    /// Spaceless words too short for a trigram, found by scanning.
    short: Vec<String>,
}

impl Plan {
    fn new(text: &str) -> Plan {
        let mut words = Vec::new();
        let mut substrings = Vec::new();
        let mut short = Vec::new();
        for w in text.split_whitespace() {
            if !w.chars().any(is_spaceless) {
                words.push(phrase(w, "*"));
            } else if w.chars().count() >= 3 {
                substrings.push(phrase(w, ""));
            } else {
                short.push(w.to_string());
            }
        }
        let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(" "));
        Plan {
            words: join(words),
            substrings: join(substrings),
            short,
        }
    }
}

impl Store {
    /// Messages containing all of `text`'s words, best matches first (newest first among
    /// equals). A query with no words is refused; one with only punctuation finds nothing.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>> {
        if fts_query(text).is_none() {
            return Err(StoreError::BadQuery {
                query: text.to_string(),
                reason: "there is nothing to search for".into(),
            });
        }
        let plan = Plan::new(text);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The index with the most to say drives the query (its rank orders the hits, its
        // snippet marks them); the other conditions filter.
        let (from, snippet, rank) = if plan.words.is_some() {
            (
                "messages_fts JOIN messages m ON m.id = messages_fts.rowid",
                "snippet(messages_fts, 0, ?1, ?2, '…', ?3)",
                "rank, ",
            )
        } else if plan.substrings.is_some() {
            (
                "messages_trigram JOIN messages m ON m.id = messages_trigram.rowid",
                "snippet(messages_trigram, 0, ?1, ?2, '…', ?3)",
                "rank, ",
            )
        } else {
            ("messages m", "NULL", "")
        };
        let mut args: Vec<Value> = vec![
            MATCH_START.to_string().into(),
            MATCH_END.to_string().into(),
            SNIPPET_WORDS.into(),
            limit.into(),
        ];
        let mut conditions = Vec::new();
        if let Some(q) = &plan.words {
            args.push(q.clone().into());
            conditions.push(format!("messages_fts MATCH ?{}", args.len()));
        }
        if let Some(q) = &plan.substrings {
            args.push(q.clone().into());
            conditions.push(if plan.words.is_some() {
                format!(
                    "m.id IN (SELECT rowid FROM messages_trigram WHERE messages_trigram MATCH ?{})",
                    args.len()
                )
            } else {
                format!("messages_trigram MATCH ?{}", args.len())
            });
        }
        for w in &plan.short {
            args.push(w.clone().into());
            conditions.push(format!("instr(m.content, ?{}) > 0", args.len()));
        }
        let sql = format!(
            "SELECT m.conversation_id, m.id, m.role, m.model, m.created_at, c.title, {snippet}, m.content
             FROM {from}
             JOIN conversations c ON c.id = m.conversation_id
             WHERE {}
             ORDER BY {rank}m.id DESC
             LIMIT ?4",
            conditions.join(" AND ")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(fail(&self.path))?;
        let rows = stmt.query_map(params_from_iter(args), |row| {
            let role: String = row.get(2)?;
            let snippet: Option<String> = row.get(6)?;
            let content: String = row.get(7)?;
            Ok(SearchHit {
                conversation: ConversationId(row.get(0)?),
                message: MessageId(row.get(1)?),
                role: Role::parse(&role).unwrap_or(Role::User),
                model: row.get(3)?,
                created_at: row.get(4)?,
                title: row.get(5)?,
                snippet: snippet.unwrap_or_else(|| scan_snippet(&content, &plan.short)),
            })
        });
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

/// A snippet for a match found by scanning: the first word found, marked, with some characters
/// around it.
fn scan_snippet(content: &str, words: &[String]) -> String {
    let Some((at, word)) = words
        .iter()
        .filter_map(|w| content.find(w.as_str()).map(|at| (at, w)))
        .min()
    else {
        return String::new();
    };
    let before: Vec<char> = content[..at].chars().collect();
    let start = before.len().saturating_sub(SNIPPET_CHARS);
    let after = &content[at + word.len()..];
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(&before[start..]);
    out.push_str(MATCH_START);
    out.push_str(word);
    out.push_str(MATCH_END);
    out.extend(after.chars().take(SNIPPET_CHARS));
    if after.chars().nth(SNIPPET_CHARS).is_some() {
        out.push('…');
    }
    out
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
    fn words_inside_text_without_spaces_are_found() {
        let (_dir, mut store) = temp_store();
        let (c, _) = turn(&mut store, None, "我喜欢吃苹果和香蕉。", "バナナが好きです");
        turn(
            &mut store,
            None,
            "ฉันชอบกินกล้วย",
            "Fruit salad: apples, bananas",
        );
        for (query, role) in [
            ("我喜欢", Role::User),
            ("苹果", Role::User),
            ("香蕉", Role::User),
            ("吃苹果和", Role::User),
            ("果", Role::User),
            ("好き", Role::Assistant),
            ("バナナ", Role::Assistant),
        ] {
            let hits = store.search(query, 10).unwrap();
            assert_eq!(hits.len(), 1, "{query}");
            assert_eq!((hits[0].conversation, hits[0].role), (c, role), "{query}");
            assert!(
                hits[0].snippet.contains(&format!("[{query}]")),
                "{query}: {}",
                hits[0].snippet
            );
        }
        assert_eq!(store.search("กล้วย", 10).unwrap().len(), 1, "Thai");
        assert!(
            store.search("葡萄", 10).unwrap().is_empty(),
            "absent words stay absent"
        );
        assert!(
            store.search("苹果 葡萄", 10).unwrap().is_empty(),
            "every word must match"
        );
        // Mixed: a word from the word index and a substring together.
        assert_eq!(store.search("apples 苹果", 10).unwrap().len(), 0);
        assert_eq!(store.search("fruit bananas", 10).unwrap().len(), 1);
        let mixed = turn(&mut store, None, "Rust 很好用", "ok").0;
        let hits = store.search("rust 好用", 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].conversation, mixed);
        assert!(hits[0].snippet.contains("[Rust]"), "{}", hits[0].snippet);
        let hits = store.search("很好用", 10).unwrap();
        assert_eq!(hits.len(), 1);
    }

    #[test]
    fn short_spaceless_words_get_a_scanned_snippet() {
        let long = format!("{}苹果{}", "前".repeat(40), "后".repeat(40));
        let (_dir, mut store) = temp_store();
        turn(&mut store, None, &long, "ok");
        let hits = store.search("苹果", 10).unwrap();
        assert_eq!(hits.len(), 1);
        let snippet = &hits[0].snippet;
        assert!(snippet.contains("[苹果]"), "{snippet}");
        assert!(
            snippet.starts_with('…') && snippet.ends_with('…'),
            "{snippet}"
        );
        assert!(snippet.chars().count() < long.chars().count(), "{snippet}");
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
