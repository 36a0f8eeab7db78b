//! Unit tests of the store on real database files (WAL needs a file), plus helpers the search
//! and export tests share.

use super::*;
use crate::domain::{Origin, Source};

/// A store in a fresh temporary folder; keep the folder alive as long as the store.
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("history.db")).unwrap();
    (dir, store)
}

/// One finished exchange: a user message after the conversation's head (a new conversation when
/// `conversation` is `None`), then a reply that is saved as a "draft" before it is finished with
/// `reply`. Returns the conversation and the reply's id.
pub(crate) fn turn(
    store: &mut Store,
    conversation: Option<ConversationId>,
    user: &str,
    reply: &str,
) -> (ConversationId, MessageId) {
    let c = match conversation {
        Some(c) => c,
        None => store
            .create_conversation(None, &Origin::new(Source::Chat))
            .unwrap(),
    };
    let head = store.head(c).unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        seed: Some(7),
        ..SamplingParams::default()
    };
    let u = store
        .add_user_message(c, head, user, "gemma3-270m", &params)
        .unwrap();
    let r = store.start_reply(u, "gemma3-270m", &params).unwrap();
    store.save_partial_reply(r, "draft").unwrap();
    store
        .finish_reply(r, &finished(reply, FinishReason::Stop))
        .unwrap();
    (c, r)
}

pub(crate) fn finished(text: &str, reason: FinishReason) -> ReplyEnd {
    ReplyEnd {
        text: text.to_string(),
        finish_reason: reason,
        usage: Some(Usage {
            prompt_tokens: 10,
            cached_tokens: 2,
            completion_tokens: 3,
        }),
        timings: Some(Timings {
            queue_ms: 0.5,
            ttft_ms: 40.0,
            prefill_tokens_per_s: 900.0,
            decode_tokens_per_s: 55.5,
            total_ms: 95.0,
        }),
        engine: Some("gemma-engine".into()),
        backend: Some("CPU".into()),
        error: None,
    }
}

fn is_rfc3339_utc(s: &str) -> bool {
    // 2025-01-31T12:34:56.789Z
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.chars().filter(char::is_ascii_digit).count() == 17
}

#[test]
fn opens_a_new_database_in_wal_mode_with_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/folder/history.db");
    let store = Store::open(&path).unwrap();
    assert!(path.is_file());
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = store
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert!(fk);
    assert_eq!(
        migrations::user_version(&store.conn).unwrap(),
        migrations::latest()
    );
}

#[test]
fn reopening_keeps_data_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let (c, r) = {
        let mut store = Store::open(&path).unwrap();
        turn(&mut store, None, "remember me", "I will")
    };
    let mut store = Store::open(&path).unwrap();
    assert_eq!(
        migrations::apply(&mut store.conn).unwrap(),
        migrations::Outcome::Current { applied: 0 }
    );
    assert_eq!(store.message(r).unwrap().content, "I will");
    assert_eq!(
        store.conversation(c).unwrap().title.as_deref(),
        Some("remember me")
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    drop(Store::open(&path).unwrap());
    let newer = migrations::latest() + 1;
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {newer}"))
            .unwrap();
    }
    let err = Store::open(&path)
        .err()
        .expect("newer schema must be refused");
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == newer),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("upgrade gemmactl"),
        "{text}"
    );
    let conn = Connection::open(&path).unwrap();
    assert_eq!(migrations::user_version(&conn).unwrap(), newer);
}

#[test]
fn a_file_that_is_not_a_database_is_called_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let err = Store::open(&path).err().expect("garbage must be refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn a_folder_that_cannot_be_created_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let err = Store::open(&blocker.join("history.db"))
        .err()
        .expect("cannot create under a file");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("history.db"), "{err}");
}

#[test]
fn user_message_is_committed_before_the_reply_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut store = Store::open(&path).unwrap();
    let c = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    let u = store
        .add_user_message(
            c,
            None,
            "are you there?",
            "gemma3-270m",
            &SamplingParams::default(),
        )
        .unwrap();
    let r = store
        .start_reply(u, "gemma3-270m", &SamplingParams::default())
        .unwrap();
    store.save_partial_reply(r, "I am th").unwrap();
    // A second connection (another process) sees both without any further call: committed.
    let other = Store::open(&path).unwrap();
    assert_eq!(other.message(u).unwrap().content, "are you there?");
    let reply = other.message(r).unwrap();
    assert_eq!(reply.content, "I am th");
    assert!(reply.is_unfinished());
    assert_eq!(reply.completed_at, None);
}

#[test]
fn finished_reply_keeps_everything_about_how_it_was_made() {
    let (_dir, mut store) = temp_store();
    let (c, r) = turn(&mut store, None, "hello", "hi there");
    let m = store.message(r).unwrap();
    assert_eq!(m.role, Role::Assistant);
    assert_eq!(m.conversation, c);
    assert_eq!(m.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        m.usage,
        Some(Usage {
            prompt_tokens: 10,
            cached_tokens: 2,
            completion_tokens: 3
        })
    );
    assert_eq!(m.timings.as_ref().unwrap().decode_tokens_per_s, 55.5);
    assert_eq!(m.engine.as_deref(), Some("gemma-engine"));
    assert_eq!(m.backend.as_deref(), Some("CPU"));
    assert_eq!(m.params.as_ref().unwrap().seed, Some(7));
    assert!(is_rfc3339_utc(&m.created_at), "{}", m.created_at);
    assert!(is_rfc3339_utc(m.completed_at.as_deref().unwrap()));
    let conv = store.conversation(c).unwrap();
    assert!(is_rfc3339_utc(&conv.created_at) && is_rfc3339_utc(&conv.updated_at));
    assert_eq!(conv.model.as_deref(), Some("gemma3-270m"));
    assert_eq!(conv.head, Some(r));
}

#[test]
fn a_conversation_was_updated_when_its_last_reply_ended() {
    let (_dir, mut store) = temp_store();
    let c = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    let params = SamplingParams::default();
    let u = store
        .add_user_message(c, None, "hello", "gemma3-270m", &params)
        .unwrap();
    let r = store.start_reply(u, "gemma3-270m", &params).unwrap();
    let started = store.conversation(c).unwrap().updated_at;
    // Timestamps have millisecond resolution: let the reply take longer than that.
    std::thread::sleep(std::time::Duration::from_millis(20));
    store
        .finish_reply(r, &finished("hi", FinishReason::Stop))
        .unwrap();
    let updated = store.conversation(c).unwrap().updated_at;
    let completed = store.message(r).unwrap().completed_at.unwrap();
    assert_eq!(updated, completed);
    assert!(updated > started, "{updated} is not after {started}");
}

#[test]
fn a_reply_cut_short_keeps_its_text_reason_and_error() {
    let (_dir, mut store) = temp_store();
    let c = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    let u = store
        .add_user_message(
            c,
            None,
            "long story please",
            "m",
            &SamplingParams::default(),
        )
        .unwrap();
    let r = store
        .start_reply(u, "m", &SamplingParams::default())
        .unwrap();
    let mut end = finished("Once upon", FinishReason::Error);
    end.usage = None;
    end.error = Some("gemma-engine was killed by signal 9".into());
    store.finish_reply(r, &end).unwrap();
    let m = store.message(r).unwrap();
    assert_eq!(
        (m.content.as_str(), m.finish_reason),
        ("Once upon", Some(FinishReason::Error))
    );
    assert_eq!(
        m.error.as_deref(),
        Some("gemma-engine was killed by signal 9")
    );
    assert_eq!(m.usage, None);
    // A finished reply is final.
    assert!(matches!(store.finish_reply(r, &end), Err(StoreError::NotAReply(id)) if id == r));
    assert!(matches!(
        store.save_partial_reply(r, "more"),
        Err(StoreError::NotAReply(_))
    ));
    assert!(
        matches!(
            store.save_partial_reply(u, "x"),
            Err(StoreError::NotAReply(_))
        ),
        "user messages are not replies"
    );
    assert!(matches!(
        store.save_partial_reply(MessageId(999), "x"),
        Err(StoreError::MessageNotFound(_))
    ));
}

#[test]
fn branches_fork_and_paths() {
    let (_dir, mut store) = temp_store();
    let (c, r1) = turn(&mut store, None, "q1", "a1");
    let (_, r2) = turn(&mut store, Some(c), "q2", "a2");
    // Retry: a second reply to the same user message is a sibling.
    let q2 = store.message(r2).unwrap().parent.unwrap();
    let r2b = store
        .start_reply(q2, "other-model", &SamplingParams::default())
        .unwrap();
    store
        .finish_reply(r2b, &finished("a2 again", FinishReason::Length))
        .unwrap();
    assert_eq!(
        store
            .children(q2)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![r2, r2b]
    );
    assert_eq!(store.head(c).unwrap(), Some(r2b));
    assert_eq!(
        store.conversation(c).unwrap().model.as_deref(),
        Some("other-model")
    );

    // Fork after the first reply: the next turn is a sibling of q2.
    assert_eq!(store.fork(r1).unwrap(), c);
    assert_eq!(store.head(c).unwrap(), Some(r1));
    let (_, r3) = turn(&mut store, Some(c), "q3", "a3");
    assert_eq!(store.children(r1).unwrap().len(), 2);

    let texts = |path: Vec<StoredMessage>| path.into_iter().map(|m| m.content).collect::<Vec<_>>();
    assert_eq!(texts(store.path_to(r3).unwrap()), ["q1", "a1", "q3", "a3"]);
    assert_eq!(
        texts(store.path_to(r2b).unwrap()),
        ["q1", "a1", "q2", "a2 again"]
    );
    assert_eq!(store.messages(c).unwrap().len(), 7);

    let all = store.messages(c).unwrap();
    let visits = tree::depth_first(&all);
    let order: Vec<_> = visits
        .iter()
        .map(|v| {
            (
                v.message.content.as_str(),
                v.depth,
                v.branch.map(|b| (b.index, b.count)),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("q1", 0, None),
            ("a1", 0, None),
            ("q2", 1, Some((1, 2))),
            ("a2", 2, Some((1, 2))),
            ("a2 again", 2, Some((2, 2))),
            ("q3", 1, Some((2, 2))),
            ("a3", 1, None),
        ]
    );
}

#[test]
fn replay_sends_the_system_prompt_and_skips_empty_replies() {
    let (_dir, mut store) = temp_store();
    let (c, r1) = turn(&mut store, None, "q1", "a1");
    store.set_system(c, Some("You are terse.")).unwrap();
    let q2 = store
        .add_user_message(c, Some(r1), "q2", "m", &SamplingParams::default())
        .unwrap();
    let dead = store
        .start_reply(q2, "m", &SamplingParams::default())
        .unwrap();
    let replay = store.replay(dead).unwrap();
    let got: Vec<(Role, &str)> = replay
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Role::System, "You are terse."),
            (Role::User, "q1"),
            (Role::Assistant, "a1"),
            (Role::User, "q2")
        ]
    );
    store.set_system(c, None).unwrap();
    assert_eq!(store.replay(r1).unwrap().len(), 2);
}

#[test]
fn parents_must_exist_and_belong_to_the_conversation() {
    let (_dir, mut store) = temp_store();
    let (a, ra) = turn(&mut store, None, "in a", "ok");
    let b = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    let err = store
        .add_user_message(b, Some(ra), "x", "m", &SamplingParams::default())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongConversation { expected, actual, .. } if expected == b && actual == a),
        "{err}"
    );
    assert!(matches!(
        store.add_user_message(
            b,
            Some(MessageId(12345)),
            "x",
            "m",
            &SamplingParams::default()
        ),
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(matches!(
        store.add_user_message(
            ConversationId(999),
            None,
            "x",
            "m",
            &SamplingParams::default()
        ),
        Err(StoreError::ConversationNotFound(_))
    ));
    assert!(matches!(
        store.start_reply(MessageId(999), "m", &SamplingParams::default()),
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(matches!(
        store.fork(MessageId(999)),
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(store.messages(b).unwrap().is_empty());
}

#[test]
fn titles_come_from_the_first_user_line() {
    assert_eq!(
        title_from("\n  Hello there \nsecond").as_deref(),
        Some("Hello there")
    );
    assert_eq!(title_from("   \n "), None);
    let long = "é".repeat(100);
    let title = title_from(&long).unwrap();
    assert_eq!(title.chars().count(), TITLE_CHARS + 1);
    assert!(title.ends_with('…'));
    let (_dir, mut store) = temp_store();
    let (c, _) = turn(&mut store, None, "first", "a");
    turn(&mut store, Some(c), "second", "b");
    assert_eq!(
        store.conversation(c).unwrap().title.as_deref(),
        Some("first")
    );
    store.set_title(c, "renamed").unwrap();
    assert_eq!(
        store.conversation(c).unwrap().title.as_deref(),
        Some("renamed")
    );
}

#[test]
fn listing_latest_and_model_filter() {
    let (_dir, mut store) = temp_store();
    assert_eq!(store.latest_conversation().unwrap(), None);
    let (a, _) = turn(&mut store, None, "a", "a");
    let b = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    store
        .add_user_message(b, None, "b", "qwen", &SamplingParams::default())
        .unwrap();
    assert_eq!(store.latest_conversation().unwrap().unwrap().id, b);
    // Continuing `a` makes it the latest again.
    turn(&mut store, Some(a), "a again", "ok");
    assert_eq!(store.latest_conversation().unwrap().unwrap().id, a);
    let all = store.list_conversations(10, None).unwrap();
    assert_eq!(
        all.iter()
            .map(|s| (s.conversation.id, s.messages))
            .collect::<Vec<_>>(),
        [(a, 4), (b, 1)]
    );
    assert_eq!(store.list_conversations(1, None).unwrap().len(), 1);
    let qwen = store.list_conversations(10, Some("qwen")).unwrap();
    assert_eq!(
        qwen.iter().map(|s| s.conversation.id).collect::<Vec<_>>(),
        [b]
    );
    assert!(store
        .list_conversations(10, Some("nope"))
        .unwrap()
        .is_empty());
}

#[test]
fn delete_removes_the_conversation_and_its_messages_only() {
    let (_dir, mut store) = temp_store();
    let (a, ra) = turn(&mut store, None, "a", "a");
    let (b, rb) = turn(&mut store, None, "b", "b");
    store.delete_conversation(a).unwrap();
    assert!(matches!(
        store.conversation(a),
        Err(StoreError::ConversationNotFound(_))
    ));
    assert!(matches!(
        store.message(ra),
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(matches!(
        store.delete_conversation(a),
        Err(StoreError::ConversationNotFound(_))
    ));
    assert_eq!(store.message(rb).unwrap().conversation, b);
    // Ids are never reused: the next conversation gets a new number.
    let c = store
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
    assert!(c.0 > b.0);
    let orphans: i64 = store
        .conn
        .query_row("SELECT count(*) FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn ids_parse_from_what_users_type() {
    assert_eq!("12".parse::<ConversationId>(), Ok(ConversationId(12)));
    assert_eq!("#40".parse::<MessageId>(), Ok(MessageId(40)));
    for bad in ["", "abc", "-1", "0", "1.5", "99999999999999999999"] {
        let err = bad.parse::<ConversationId>().unwrap_err();
        assert!(err.contains("is not a conversation id"), "{bad}: {err}");
    }
}

#[test]
fn two_connections_read_and_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut first = Store::open(&path).unwrap();
    let second = Store::open(&path).unwrap();
    let (c, _) = turn(&mut first, None, "from first", "ok");
    // A reader in the middle of a transaction does not block the writer (WAL).
    second
        .conn
        .execute_batch("BEGIN; SELECT count(*) FROM messages;")
        .unwrap();
    turn(&mut first, Some(c), "while reading", "ok");
    second.conn.execute_batch("COMMIT").unwrap();
    assert_eq!(second.messages(c).unwrap().len(), 4);

    // Writers from two threads, each with its own connection, interleave without errors.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                for i in 0..20 {
                    turn(&mut store, None, &format!("thread {t} turn {i}"), "ok");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(second.list_conversations(100, None).unwrap().len(), 41);
    let hits = second.search("thread", 100).unwrap();
    assert_eq!(hits.len(), 40);
}

#[test]
fn a_writer_blocked_past_the_timeout_gets_a_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let holder = Store::open(&path).unwrap();
    let mut waiter = Store::open(&path).unwrap();
    waiter.conn.busy_timeout(Duration::from_millis(50)).unwrap();
    holder.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = waiter
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    holder.conn.execute_batch("ROLLBACK").unwrap();
    waiter
        .create_conversation(None, &Origin::new(Source::Chat))
        .unwrap();
}

#[test]
fn integrity_and_fts_consistency_hold_after_a_workout() {
    let (_dir, mut store) = temp_store();
    let mut convs = Vec::new();
    for i in 0..10 {
        let (c, _) = turn(&mut store, None, &format!("topic {i} walrus"), "reply");
        convs.push(c);
    }
    for c in convs.iter().step_by(2) {
        store.delete_conversation(*c).unwrap();
    }
    let ok: String = store
        .conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // FTS5's own check compares the index with the content table.
    store
        .conn
        .execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
            [],
        )
        .unwrap();
    assert_eq!(store.search("walrus", 100).unwrap().len(), 5);
}

#[test]
fn a_conversation_keeps_where_it_came_from() {
    let (_dir, mut store) = temp_store();
    let origin = Origin {
        source: Source::Batch,
        client: Some("claude-code".into()),
        batch: Some(crate::domain::BatchLine {
            batch_id: "b1".into(),
            line_id: "line-7".into(),
        }),
    };
    let c = store.create_conversation(None, &origin).unwrap();
    assert_eq!(store.conversation(c).unwrap().origin, Some(origin));
    let plain = store
        .create_conversation(None, &Origin::new(Source::Run))
        .unwrap();
    let got = store.conversation(plain).unwrap().origin.unwrap();
    assert_eq!(
        (got.source, got.client, got.batch),
        (Source::Run, None, None)
    );
}
