//! Bad input that users of similar local-model tools have hit (issue 12), tried on the real
//! binaries with the database read directly: engine settings out of range from every source, a
//! Git LFS pointer for a model, words inside text written without spaces, stored text full of
//! control characters, a prompt that is not UTF-8, a reply cut by the context window, and the
//! history on a full disk and in a read-only folder (a real tmpfs when running as root).

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{stderr, stdout, Home};
use rusqlite::Connection;
use serde_json::Value;

/// One sentence on stderr, no panic, no engine usage text.
fn one_clear_sentence(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, got {out:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("usage: gemma-engine"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    err
}

fn with_stdin(cmd: Command, input: &[u8]) -> Output {
    common::run_bounded_with_stdin(cmd, input)
}

#[test]
fn engine_settings_out_of_range_are_refused_whatever_their_source() {
    let home = Home::new();
    // Flags: clap, with the range.
    for flag in [["--context", "0"], ["--context", "1"], ["--threads", "0"]] {
        let out = home.run(&["run", flag[0], flag[1], "hi"]);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("usage: gemma-engine"));
    }
    let help = stdout(&home.run(&["run", "--help"]));
    assert!(
        help.contains("64 to 1048576") && help.contains("1 to 1024"),
        "{help}"
    );
    // Environment variables: the same ranges, the variable named.
    for (name, value) in [
        ("GEMMACTL_CONTEXT", "0"),
        ("GEMMACTL_CONTEXT", "1"),
        ("GEMMACTL_THREADS", "0"),
        ("GEMMACTL_PARALLEL", "0"),
        ("GEMMACTL_PARALLEL", "100000"),
    ] {
        let mut cmd = home.cmd();
        cmd.env(name, value).args(["run", "hi"]);
        let out = common::run_bounded(cmd);
        let err = one_clear_sentence(&out);
        assert!(
            err.contains(&format!("{name}={value}")) && err.contains("out of range"),
            "{err}"
        );
    }
    // config.toml: the same again, the file named.
    let config = home.path().join("config").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    for (text, key) in [
        ("[engine]\ncontext = 1\n", "engine.context = 1"),
        ("[engine]\nthreads = 0\n", "engine.threads = 0"),
    ] {
        std::fs::write(&config, text).unwrap();
        let err = one_clear_sentence(&home.run(&["run", "hi"]));
        assert!(
            err.contains(&config.display().to_string()) && err.contains(key),
            "{err}"
        );
    }
}

#[test]
fn a_git_lfs_pointer_for_a_model_is_named_with_the_fix() {
    let home = Home::new();
    let pointer = "version https://git-lfs.example/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 253113024\n";
    for name in ["gemma-3-270m.gguf", "gemma-3-270m-sfp.sbs"] {
        let file = home.path().join(name);
        std::fs::write(&file, pointer).unwrap();
        for args in [
            vec!["models", "add", "lfs", file.to_str().unwrap()],
            vec!["run", "--model", file.to_str().unwrap(), "hi"],
        ] {
            let err = one_clear_sentence(&home.run(&args));
            assert!(
                err.contains("Git LFS pointer")
                    && err.contains("git lfs pull")
                    && err.contains(name),
                "{args:?}: {err}"
            );
        }
    }
}

/// A conversation as `history export --format jsonl` writes it, with the given title and texts.
fn export_line(title: &str, user: &str, reply: &str) -> String {
    let conv = serde_json::json!({"type": "conversation", "format_version": 1, "id": 1, "title": title,
        "created_at": "2025-03-01T10:00:00Z", "updated_at": "2025-03-01T10:05:00Z", "model": "gemma3-270m"});
    let u = serde_json::json!({"type": "message", "id": 1, "conversation": 1, "parent": null, "role": "user",
        "content": user, "model": "gemma3-270m", "created_at": "2025-03-01T10:00:00Z"});
    let r = serde_json::json!({"type": "message", "id": 2, "conversation": 1, "parent": 1, "role": "assistant",
        "content": reply, "model": "gemma3-270m", "finish_reason": "stop", "created_at": "2025-03-01T10:00:01Z"});
    format!("{conv}\n{u}\n{r}\n")
}

fn import(home: &Home, text: &str) {
    let file = home.path().join("import.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = home.run(&["history", "import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn search_hits(home: &Home, words: &str) -> usize {
    let out = home.run(&["history", "search", words, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn history_search_finds_words_inside_text_without_spaces() {
    let home = Home::new();
    import(
        &home,
        &export_line("水果", "我喜欢吃苹果和香蕉。", "りんごとバナナが好きです。"),
    );
    for word in ["我喜欢", "苹果", "香蕉", "吃苹果和", "バナナ", "好き"] {
        assert_eq!(search_hits(&home, word), 1, "{word}");
    }
    assert_eq!(search_hits(&home, "葡萄"), 0);
    let shown = stdout(&home.run(&["history", "search", "香蕉"]));
    assert!(shown.contains("[香蕉]"), "{shown}");

    // A database from before the trigram index is brought up to date and found the same way.
    let old = Home::new();
    let db = old.path().join("data").join("history.db");
    version_2_database(&db, "我喜欢吃苹果和香蕉。");
    assert_eq!(search_hits(&old, "香蕉"), 1);
}

/// A history database as gemmactl wrote it at schema version 2, holding one message.
fn version_2_database(db: &Path, content: &str) {
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(include_str!("../src/store/migrations/0001_initial.sql"))
        .unwrap();
    conn.execute_batch(include_str!("../src/store/migrations/0002_origin.sql"))
        .unwrap();
    conn.execute_batch("PRAGMA user_version = 2; PRAGMA journal_mode = WAL;")
        .unwrap();
    conn.execute(
        "INSERT INTO conversations (id, title, source) VALUES (1, 'fruit', 'chat')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO messages (conversation_id, role, content) VALUES (1, 'user', ?1)",
        [content],
    )
    .unwrap();
}

#[test]
fn stored_control_characters_reach_the_terminal_shown_not_obeyed() {
    let home = Home::new();
    let title = "\u{1b}[2J\u{1b}]0;owned\u{7}bell\u{c}feed\r";
    import(
        &home,
        &export_line(title, "text \u{1b}[31mred\u{9b}1m", "ok \u{7}"),
    );
    for args in [
        vec!["history", "list"],
        vec!["history", "show"],
        vec!["history", "search", "text"],
    ] {
        let out = home.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        for raw in ['\u{1b}', '\u{7}', '\u{c}', '\r', '\u{9b}'] {
            assert!(
                !text.contains(raw),
                "{args:?} printed {raw:?} raw: {text:?}"
            );
        }
        assert!(text.contains('␛'), "{args:?}: {text:?}");
    }
    // JSON keeps the exact text, escaped.
    let list: Value =
        serde_json::from_str(&stdout(&home.run(&["history", "list", "--json"]))).unwrap();
    assert_eq!(list[0]["title"], title);
}

#[test]
fn a_prompt_on_stdin_that_is_not_utf8_is_named_with_its_offset() {
    let home = common::home_with_model();
    let mut cmd = home.cmd();
    cmd.args(["run", "-"]);
    let out = with_stdin(cmd, b"Caf\xE9 au lait\n");
    let err = one_clear_sentence(&out);
    assert!(
        err.contains("not valid UTF-8") && err.contains("byte 3") && err.contains("0xE9"),
        "{err}"
    );
    assert!(err.contains("after \"Caf\""), "{err}");
    // Nothing was stored.
    let list = stdout(&home.run(&["history", "list", "--json"]));
    assert_eq!(list.trim(), "[]");
}

#[test]
fn a_reply_cut_by_the_context_window_has_its_own_finish_reason() {
    let home = common::home_with_model();
    // About 240 tokens of counting: the greedy base model goes on counting until the 256-token
    // context is full, long before its 100-token limit.
    let prompt = " one two three four five six seven eight nine ten".repeat(24);
    let out = home.run(&[
        "run",
        "--context",
        "256",
        "--max-tokens",
        "100",
        "--temperature",
        "0",
        "--json",
        &prompt,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["finish_reason"], "context", "{v}");
    let used = v["usage"]["prompt_tokens"].as_u64().unwrap()
        + v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() < 100 && used >= 250,
        "{v}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("cut short") && err.contains("256-token context"),
        "{err}"
    );
    let db = Connection::open(home.path().join("data").join("history.db")).unwrap();
    let reason: String = db
        .query_row(
            "SELECT finish_reason FROM messages WHERE role = 'assistant'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "context");
}

/// A small tmpfs mounted on a folder, unmounted (lazily, whatever is open) when dropped. Only
/// root can mount; `None` elsewhere.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            at: at.to_path_buf(),
        })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.at)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options} failed");
    }

    /// Fills the file system: writes until there is no room left.
    fn fill(&self) -> PathBuf {
        let filler = self.at.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // The last partial block, byte by byte, so not even a page is left.
        while f.write_all(&[0]).is_ok() {}
        let _ = f.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) only reads the process's effective user id.
    unsafe { libc::geteuid() == 0 }
}

/// Every reading command works and shows the stored conversation.
fn reading_works(home: &Home, word: &str) {
    let list = home.run(&["history", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains("fruit"), "{}", stdout(&list));
    for args in [
        vec!["history", "show"],
        vec!["history", "export"],
        vec!["history", "export", "--format", "jsonl"],
    ] {
        let out = home.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains(word), "{args:?}: {}", stdout(&out));
    }
    assert_eq!(search_hits(home, word), 1);
}

#[test]
fn history_is_read_on_a_full_disk_and_in_a_read_only_folder() {
    let home = common::home_with_model();
    let data = home.path().join("data");
    let Some(disk) = Tmpfs::mount(&data, "2m") else {
        assert!(
            !is_root(),
            "running as root, but a tmpfs could not be mounted"
        );
        // Not root: a folder without write permission is the read-only case that can be had.
        import(&home, &export_line("fruit", "bananas and apples", "yes"));
        let mut perms = std::fs::metadata(&data).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        std::fs::set_permissions(&data, perms).unwrap();
        reading_works(&home, "bananas");
        let err = one_clear_sentence(&home.run(&["run", "hi"]));
        assert!(
            err.contains("history.db") && err.contains("--no-log"),
            "{err}"
        );
        return;
    };
    import(&home, &export_line("fruit", "bananas and apples", "yes"));

    // A full disk: reading works, writing says what is wrong and what to do.
    let filler = disk.fill();
    reading_works(&home, "bananas");
    for args in [vec!["run", "hi"], vec!["history", "rm", "1", "--yes"]] {
        let err = one_clear_sentence(&home.run(&args));
        assert!(
            err.contains("disk is full") && err.contains("--no-log") && !err.contains("I/O"),
            "{args:?}: {err}"
        );
    }
    let out = home.run(&[
        "run",
        "--no-log",
        "--max-tokens",
        "2",
        "--temperature",
        "0",
        "The capital of France is",
    ]);
    assert!(
        out.status.success(),
        "--no-log runs on a full disk: {}",
        stderr(&out)
    );

    // A read-only file system, holding a database from before schema 3: read (upgraded in
    // memory only), never written.
    std::fs::remove_file(&filler).unwrap();
    for f in ["history.db", "history.db-wal", "history.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    version_2_database(&data.join("history.db"), "我喜欢吃苹果和香蕉 bananas");
    disk.remount("ro");
    reading_works(&home, "bananas");
    assert_eq!(search_hits(&home, "香蕉"), 1);
    let err = one_clear_sentence(&home.run(&["run", "hi"]));
    assert!(
        err.contains("read-only") && err.contains("--no-log") && !err.contains("I/O"),
        "{err}"
    );
    disk.remount("rw");
    let version: i64 = Connection::open(data.join("history.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2, "reading a read-only database never wrote it");
}
