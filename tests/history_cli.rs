//! End-to-end tests of `gemmactl history`: the real binary on a real database file in a
//! throw-away home. Conversations are put in with the (hidden) `history import`, which reads what
//! `history export --format jsonl` writes, so the tests need no engine and no model.
//!
//! The crash test kills `gemmactl` with SIGKILL while it holds an open write transaction that has
//! already spilled uncommitted pages into the write-ahead log, then checks that the database is
//! intact and still holds everything committed before.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{stderr, stdout, Home};
use serde_json::Value;

use common::DEADLINE;

fn gemmactl(home: &Home, args: &[&str]) -> Output {
    let mut cmd = home.cmd();
    cmd.args(args);
    common::run_bounded(cmd)
}

/// Runs and expects success; returns stdout.
fn ok(home: &Home, args: &[&str]) -> String {
    let out = gemmactl(home, args);
    assert!(
        out.status.success(),
        "gemmactl {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// Runs and expects failure; returns stderr.
fn fails(home: &Home, args: &[&str]) -> String {
    let out = gemmactl(home, args);
    assert!(
        !out.status.success(),
        "gemmactl {args:?} should fail; stdout: {}",
        stdout(&out)
    );
    stderr(&out)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn db_path(home: &Home) -> PathBuf {
    home.path().join("data").join("history.db")
}

/// A conversation in export format: a question, a reply that stopped, a retried reply that was
/// cancelled (a branch), and a follow-up on the first reply. Exported ids are 1..=4.
fn fixture(title: &str, words: &str) -> String {
    let lines = [
        format!(r#"{{"type":"conversation","format_version":1,"id":1,"title":"{title}","created_at":"2025-03-01T10:00:00Z","updated_at":"2025-03-01T10:05:00Z","model":"gemma3-270m","system":"Answer briefly.","head":4}}"#),
        format!(r#"{{"type":"message","id":1,"conversation":1,"parent":null,"role":"user","content":"Tell me about {words}","model":"gemma3-270m","created_at":"2025-03-01T10:00:00Z"}}"#),
        r#"{"type":"message","id":2,"conversation":1,"parent":1,"role":"assistant","content":"It is a fine subject.","model":"gemma3-270m","engine":"gemma-engine","backend":"CPU","finish_reason":"stop","usage":{"prompt_tokens":12,"cached_tokens":0,"completion_tokens":6},"timings":{"queue_ms":0.0,"ttft_ms":50.0,"prefill_tokens_per_s":300.0,"decode_tokens_per_s":60.5,"total_ms":150.0},"created_at":"2025-03-01T10:00:01Z","completed_at":"2025-03-01T10:00:02Z"}"#.to_string(),
        r#"{"type":"message","id":3,"conversation":1,"parent":1,"role":"assistant","content":"Well, as a","model":"qwen2.5-coder-0.5b","finish_reason":"cancelled","created_at":"2025-03-01T10:01:00Z","completed_at":"2025-03-01T10:01:01Z"}"#.to_string(),
        r#"{"type":"message","id":4,"conversation":1,"parent":2,"role":"user","content":"Why?","model":"gemma3-270m","created_at":"2025-03-01T10:02:00Z"}"#.to_string(),
    ];
    lines.join("\n") + "\n"
}

/// Imports `text` through a file and returns the new conversation ids.
fn import(home: &Home, text: &str) -> Vec<i64> {
    let file = home.path().join(format!("import-{}.jsonl", text.len()));
    std::fs::write(&file, text).unwrap();
    let out = ok(
        home,
        &["history", "import", file.to_str().unwrap(), "--json"],
    );
    let v = json(&out);
    v["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect()
}

#[test]
fn empty_history_lists_nothing_and_explains() {
    let home = Home::new();
    let out = gemmactl(&home, &["history", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("no saved conversations"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        json(&ok(&home, &["history", "list", "--json"])),
        Value::Array(vec![])
    );
    let err = fails(&home, &["history", "show"]);
    assert!(err.contains("no saved conversations"), "{err}");
    assert!(
        db_path(&home).is_file(),
        "the database is created in the data folder"
    );
}

#[test]
fn list_filters_by_model_and_limits() {
    let home = Home::new();
    let a = import(&home, &fixture("Alpha", "otters"))[0];
    let b = import(
        &home,
        &fixture("Beta", "badgers").replace("qwen2.5-coder-0.5b", "gemma3-1b"),
    )[0];
    let all = json(&ok(&home, &["history", "list", "--json"]));
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a) && ids.contains(&b));
    assert_eq!(all[0]["messages"], 4);
    assert_eq!(all[0]["model"], "gemma3-270m");
    let qwen = json(&ok(
        &home,
        &["history", "list", "--model", "qwen2.5-coder-0.5b", "--json"],
    ));
    assert_eq!(qwen.as_array().unwrap().len(), 1);
    assert_eq!(qwen[0]["id"], a);
    assert_eq!(qwen[0]["title"], "Alpha");
    assert_eq!(
        json(&ok(&home, &["history", "list", "--limit", "1", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let table = ok(&home, &["history", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("Alpha") && table.contains("Beta"), "{table}");
}

#[test]
fn show_displays_the_tree_with_branches_models_and_finish_reasons() {
    let home = Home::new();
    let id = import(&home, &fixture("Branches", "trees"))[0].to_string();
    let v = json(&ok(&home, &["history", "show", &id, "--json"]));
    assert_eq!(v["conversation"]["system"], "Answer briefly.");
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    let root = &messages[0];
    assert_eq!(root["parent"], Value::Null);
    assert_eq!(messages[1]["parent"], root["id"]);
    assert_eq!(messages[2]["parent"], root["id"]);
    assert_eq!(messages[2]["finish_reason"], "cancelled");
    assert_eq!(messages[1]["usage"]["completion_tokens"], 6);
    assert_eq!(messages[1]["timings"]["decode_tokens_per_s"], 60.5);
    assert_eq!(v["conversation"]["head"], messages[3]["id"]);

    let text = ok(&home, &["history", "show", &id]);
    let root_id = root["id"].as_i64().unwrap();
    assert!(
        text.contains(&format!("(branch 1 of 2 after #{root_id})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("(branch 2 of 2 after #{root_id})")),
        "{text}"
    );
    assert!(text.contains("gemma3-270m · stop · 6 tokens"), "{text}");
    assert!(text.contains("qwen2.5-coder-0.5b · cancelled"), "{text}");
    assert!(text.contains("system: Answer briefly."), "{text}");
    assert!(text.contains("← head"), "{text}");
    // Branch members are indented under the branch point.
    assert!(
        text.contains(&format!("\n  [{}] assistant", messages[1]["id"])),
        "{text}"
    );
    // Without an id: the most recently used conversation.
    assert_eq!(ok(&home, &["history", "show"]), text);

    let err = fails(&home, &["history", "show", "9999"]);
    assert!(err.contains("no conversation 9999"), "{err}");
    let err = fails(&home, &["history", "show", "abc"]);
    assert!(err.contains("not a conversation id"), "{err}");
}

#[test]
fn search_finds_snippets_and_survives_hostile_queries() {
    let home = Home::new();
    let a = import(&home, &fixture("Otters", "otters and rivers"))[0];
    import(&home, &fixture("Badgers", "badgers"));
    let hits = json(&ok(&home, &["history", "search", "otter", "--json"]));
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["conversation"], a);
    assert_eq!(hits[0]["role"], "user");
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("[otters]"),
        "{hits:?}"
    );
    // Several words: all must match; they may be given as separate arguments.
    assert_eq!(
        json(&ok(
            &home,
            &["history", "search", "otters", "rivers", "--json"]
        ))
        .as_array()
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        json(&ok(
            &home,
            &["history", "search", "otters badgers", "--json"]
        ))
        .as_array()
        .unwrap()
        .len(),
        0
    );
    // Words common to both conversations.
    assert_eq!(
        json(&ok(&home, &["history", "search", "subject", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let text = ok(&home, &["history", "search", "otters"]);
    assert!(
        text.contains(&format!("conversation {a} · message ")),
        "{text}"
    );
    for hostile in [
        "\"",
        "AND",
        "*",
        "NEAR(",
        "col:x",
        "(((",
        "日本語",
        "🎉",
        "-x",
    ] {
        let out = gemmactl(&home, &["history", "search", "--json", "--", hostile]);
        assert!(out.status.success(), "query {hostile:?}: {}", stderr(&out));
        assert!(json(&stdout(&out)).is_array());
    }
    let out = gemmactl(&home, &["history", "search", "   "]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing to search for"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn export_writes_markdown_and_jsonl_that_imports_back() {
    let home = Home::new();
    let id = import(&home, &fixture("Exported", "exports"))[0].to_string();
    let md = ok(&home, &["history", "export", &id]);
    assert!(md.starts_with("# Exported\n"), "{md}");
    assert!(
        md.contains("Tell me about exports") && md.contains("· cancelled"),
        "{md}"
    );
    assert!(md.contains("*branch 2 of 2 after #"), "{md}");

    let file = home.path().join("out.jsonl");
    let out = gemmactl(
        &home,
        &[
            "history",
            "export",
            &id,
            "--format",
            "jsonl",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "with -o nothing goes to stdout");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        exported,
        ok(&home, &["history", "export", &id, "--json"]),
        "--json is --format jsonl"
    );
    let lines: Vec<Value> = exported.lines().map(json).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["type"], "conversation");

    let copy = import(&home, &exported)[0].to_string();
    assert_ne!(copy, id);
    let again: Vec<Value> = ok(&home, &["history", "export", &copy, "--format", "jsonl"])
        .lines()
        .map(json)
        .collect();
    for (a, b) in lines.iter().zip(&again) {
        for key in [
            "content",
            "role",
            "model",
            "finish_reason",
            "usage",
            "timings",
            "created_at",
            "title",
            "system",
        ] {
            assert_eq!(a.get(key), b.get(key), "{key}");
        }
    }
}

#[test]
fn rm_asks_unless_yes_and_removes_from_search() {
    let home = Home::new();
    let id = import(&home, &fixture("Doomed", "doomed things"))[0].to_string();
    let keep = import(&home, &fixture("Kept", "kept things"))[0];
    let err = fails(&home, &["history", "rm", &id]);
    assert!(err.contains("add --yes"), "{err}");
    assert_eq!(
        json(&ok(&home, &["history", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let v = json(&ok(&home, &["history", "rm", &id, "--yes", "--json"]));
    assert_eq!(v["deleted"].as_i64().unwrap().to_string(), id);
    assert_eq!(v["messages"], 4);
    let left = json(&ok(&home, &["history", "list", "--json"]));
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], keep);
    assert_eq!(
        json(&ok(&home, &["history", "search", "doomed", "--json"])),
        Value::Array(vec![])
    );
    let err = fails(&home, &["history", "rm", &id, "--yes"]);
    assert!(err.contains(&format!("no conversation {id}")), "{err}");
}

#[test]
fn a_newer_or_corrupt_database_is_refused_with_the_fix() {
    let home = Home::new();
    import(&home, &fixture("Old", "old"));
    {
        let conn = rusqlite::Connection::open(db_path(&home)).unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
    }
    let err = fails(&home, &["history", "list"]);
    assert!(
        err.contains("schema version 999") && err.contains("upgrade gemmactl"),
        "{err}"
    );
    assert!(err.contains("history.db"), "{err}");

    let home = Home::new();
    std::fs::create_dir_all(db_path(&home).parent().unwrap()).unwrap();
    std::fs::write(db_path(&home), vec![7u8; 4096]).unwrap();
    let err = fails(&home, &["history", "list"]);
    assert!(
        err.contains("is corrupt") && err.contains("move it aside"),
        "{err}"
    );
}

#[test]
fn import_refuses_a_bad_file_and_changes_nothing() {
    let home = Home::new();
    let mut text = fixture("Half", "halves");
    text.push_str("{\"type\":\"message\",\"id\":5,\"conversation\":1,\"parent\":42,\"role\":\"user\",\"content\":\"x\",\"created_at\":\"2025-03-01T10:00:00Z\"}\n");
    let file = home.path().join("bad.jsonl");
    std::fs::write(&file, text).unwrap();
    let err = fails(&home, &["history", "import", file.to_str().unwrap()]);
    assert!(err.contains("line 6") && err.contains("parent 42"), "{err}");
    assert_eq!(
        json(&ok(&home, &["history", "list", "--json"])),
        Value::Array(vec![])
    );
}

fn wal_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
}

#[test]
fn sigkill_during_a_write_transaction_loses_nothing_committed() {
    let home = Home::new();
    let committed = import(&home, &fixture("Committed", "survivors"))[0];
    let db = db_path(&home);

    // A large import read from a pipe: gemmactl opens one transaction for all of it and, once
    // the input outgrows SQLite's page cache, writes uncommitted pages into the WAL. The pipe
    // stays open, so the transaction is still open when the process is killed.
    let mut child = home
        .cmd()
        .args(["history", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gemmactl history import");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut data = String::from(
            r#"{"type":"conversation","format_version":1,"id":1,"title":"Doomed import","created_at":"2025-03-01T10:00:00Z","updated_at":"2025-03-01T10:00:00Z"}"#,
        );
        data.push('\n');
        let filler = "lorem ipsum dolor sit amet ".repeat(40);
        for i in 1..=8000 {
            let parent = if i == 1 {
                "null".to_string()
            } else {
                (i - 1).to_string()
            };
            data.push_str(&format!(
                r#"{{"type":"message","id":{i},"conversation":1,"parent":{parent},"role":"user","content":"crashmarker {i} {filler}","created_at":"2025-03-01T10:00:00Z"}}"#
            ));
            data.push('\n');
        }
        stdin.write_all(data.as_bytes()).expect("feed the import");
        stdin.flush().unwrap();
        stdin // kept open by handing it back
    });
    let started = Instant::now();
    while !writer.is_finished() {
        assert!(
            started.elapsed() < DEADLINE,
            "the import did not read its input in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stdin = writer.join().unwrap();
    // Everything but the pipe's buffer has been read; wait for the spill into the WAL.
    while wal_len(&db) < 1_000_000 {
        assert!(
            started.elapsed() < DEADLINE,
            "no uncommitted pages reached the WAL ({} bytes)",
            wal_len(&db)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the import must still be inside its transaction"
    );

    // Meanwhile another process reads the committed state only.
    let listed = json(&ok(&home, &["history", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);

    child.kill().expect("SIGKILL gemmactl");
    let status = child.wait().unwrap();
    drop(stdin);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (conversations, messages): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (conversations, messages),
        (1, 4),
        "only the committed conversation is there"
    );
    conn.execute(
        "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
        [],
    )
    .unwrap();
    drop(conn);

    // gemmactl carries on with the same database.
    let hits = json(&ok(&home, &["history", "search", "survivors", "--json"]));
    assert_eq!(hits[0]["conversation"], committed);
    assert_eq!(
        json(&ok(&home, &["history", "search", "crashmarker", "--json"])),
        Value::Array(vec![])
    );
    import(&home, &fixture("After", "afterwards"));
    assert_eq!(
        json(&ok(&home, &["history", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
