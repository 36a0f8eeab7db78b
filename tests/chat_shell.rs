//! `gemmactl chat` in a real pseudo-terminal, on the real engine and model, with the real history
//! database inspected afterwards.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use expectrl::{Eof, Regex, Session};
use rusqlite::Connection;

/// Generous bound on each expected output: a hang fails the test instead of stalling CI.
const WAIT: Duration = Duration::from_secs(90);
const PROMPT: &str = ">>> ";

struct Chat {
    session: Session,
    /// What the shell printed before its first prompt.
    banner: String,
    /// The shell's log (`<home>/state/logs/gemmactl.log`), shown when an expectation fails.
    log: std::path::PathBuf,
}

impl Chat {
    fn start(home: &common::Home, args: &[&str]) -> Chat {
        Chat::start_with_env(home, args, &[])
    }

    fn start_with_env(home: &common::Home, args: &[&str], env: &[(&str, &str)]) -> Chat {
        Chat::spawn(home, args, env, "")
    }

    /// A shell in a terminal `cols` wide from its first line on.
    fn start_in_width(home: &common::Home, cols: u16, args: &[&str]) -> Chat {
        Chat::spawn(home, args, &[], &format!("cols {cols} rows 60"))
    }

    /// `gemmactl chat ARGS` in a pty set up as a terminal is (the pty library turns echo off;
    /// a terminal has it on), with `stty` settings applied before gemmactl starts.
    fn spawn(home: &common::Home, args: &[&str], env: &[(&str, &str)], stty: &str) -> Chat {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("stty echo {stty} && exec \"$0\" chat \"$@\""))
            .arg(common::gemmactl_bin())
            .args(args);
        cmd.env("GEMMACTL_HOME", home.path())
            .env("NO_COLOR", "1")
            .env("TERM", "xterm")
            .env_remove("GEMMACTL_MODEL")
            .env_remove("VISUAL")
            .env_remove("EDITOR");
        cmd.envs(env.iter().copied());
        let mut session = Session::spawn(cmd).expect("spawn gemmactl chat in a pty");
        session.set_expect_timeout(Some(WAIT));
        let mut chat = Chat {
            session,
            banner: String::new(),
            log: home.path().join("state/logs/gemmactl.log"),
        };
        chat.banner = chat.expect(PROMPT);
        chat
    }

    fn expect(&mut self, text: &str) -> String {
        match self.session.expect(text) {
            Ok(found) => String::from_utf8_lossy(found.before()).into_owned(),
            Err(e) => self.fail(&format!("did not see {text:?}: {e}")),
        }
    }

    /// Like [`Chat::expect`], but returns the matched text too.
    fn expect_all(&mut self, needle: impl expectrl::Needle) -> String {
        match self.session.expect(needle) {
            Ok(found) => String::from_utf8_lossy(found.as_bytes()).into_owned(),
            Err(e) => self.fail(&format!("did not see what was expected: {e}")),
        }
    }

    /// Fails the test with `why`, what the shell showed that no expectation took, and the
    /// shell's log: a time-out says where the turn stood, not just that it was late.
    fn fail(&mut self, why: &str) -> ! {
        let unread = self
            .session
            .check(Regex("(?s).+"))
            .map(|found| found.as_bytes().to_vec())
            .unwrap_or_default();
        let log = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("({e})"));
        panic!(
            "{why}\n--- shown and not yet expected ---\n{}\n--- {} ---\n{log}",
            strip_controls(&String::from_utf8_lossy(&unread)),
            self.log.display()
        )
    }

    fn line(&mut self, text: &str) {
        // A terminal reads the program's output while the user types. A long line written in
        // one go would fill the pty both ways (the shell echoes what it reads) and leave both
        // sides blocked in a write, so it goes in pieces, with what was echoed read in between.
        const PIECE: usize = 256;
        // What fits the terminal's input buffer (4 KiB on Linux) at once goes in one write.
        if text.len() <= 3000 {
            self.session.send_line(text).unwrap();
            return;
        }
        let mut sink = [0u8; 8192];
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            self.session.send(&rest[..end]).unwrap();
            rest = &rest[end..];
            std::thread::sleep(Duration::from_millis(5));
            while let Ok(n) = self.session.try_read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
        }
        self.session.send_line("").unwrap();
    }

    /// Sends `text` as a terminal sends a paste when the program asked for bracketed paste.
    fn paste(&mut self, text: &str) {
        self.session
            .send(format!("\x1b[200~{text}\x1b[201~"))
            .unwrap();
    }

    /// Waits for the stats line of a reply (any length, any finish) and the next prompt; returns
    /// what was shown.
    fn reply(&mut self) -> String {
        let shown = self.expect("finish ");
        self.expect(PROMPT);
        shown
    }

    /// Sends a message and waits for its stats line and the next prompt; returns what was shown.
    fn turn(&mut self, text: &str) -> String {
        self.line(text);
        let shown = self.expect("tok/s");
        self.expect(PROMPT);
        shown
    }

    /// Sends a message and waits for its reply (see [`Chat::reply`]).
    fn reply_to(&mut self, text: &str) -> String {
        self.line(text);
        self.reply()
    }

    fn quit(mut self) {
        self.line("/quit");
        self.session
            .expect(Eof)
            .expect("the shell did not exit on /quit");
    }

    fn pid(&self) -> i32 {
        self.session.get_process().pid().as_raw()
    }
}

fn home_with_models() -> common::Home {
    let model = common::default_model();
    let home = common::Home::new();
    let out = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = home.run(&["models", "add", "second", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    // The base model with Gemma's chat template forced on: it rambles on instead of stopping, which
    // is what the tests of stopping a long reply need.
    let out = home.run(&[
        "models",
        "add",
        "chatty",
        model.to_str().unwrap(),
        "--kind",
        "instruct",
        "--template",
        "gemma",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    home
}

/// A shell on the rambling "chatty" model whose greedy reply to "Once upon" is streaming.
fn long_reply_under_way(home: &common::Home) -> Chat {
    let mut chat = Chat::start(home, &["--model", "chatty"]);
    chat.line("/set max_tokens 3000");
    chat.expect(PROMPT);
    // Greedy, so the reply is known to run on in sentences.
    chat.line("/set temperature 0");
    chat.expect(PROMPT);
    // Two words typed, so only the reply can show four in a row: then it is streaming.
    chat.line("Once upon");
    chat.session
        .expect(Regex("[A-Za-z]+ [A-Za-z]+ [A-Za-z]+ [A-Za-z]+"))
        .unwrap();
    chat
}

/// A shell whose greedy, rambling reply is streaming; returns it with everything shown so far.
fn long_reply_shown(home: &common::Home) -> (Chat, String) {
    let mut chat = Chat::start(home, &["--model", "chatty"]);
    chat.line("/set max_tokens 3000");
    chat.expect(PROMPT);
    chat.line("/set temperature 0");
    chat.expect(PROMPT);
    chat.line("Once upon");
    let shown = chat.expect_all(Regex("[A-Za-z]+ [A-Za-z]+ [A-Za-z]+ [A-Za-z]+"));
    (chat, shown)
}

/// What a terminal shows of a reply, from the raw output since the user's line `sent`: control
/// sequences dropped, the spinner's frames (each redrawn after a bare `\r`) gone, `\r\n` as `\n`.
fn reply_text(raw: &str, sent: &str) -> String {
    let plain = strip_controls(raw);
    let after = plain
        .rsplit_once(&format!("{sent}\r\n"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("the line {sent:?} is not in {plain:?}"));
    let mut start = 0;
    for (i, c) in after.char_indices() {
        if c == '\r' && !after[i + 1..].starts_with('\n') {
            start = i + 1;
        }
    }
    after[start..].replace("\r\n", "\n").trim().to_string()
}

/// `text` without terminal control sequences (CSI, and other two-byte escapes).
fn strip_controls(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // A CSI sequence runs to its final byte (@..~); other escapes are two characters.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The lines a terminal would show, each piece between line breaks and carriage returns.
fn screen_pieces(raw: &str) -> Vec<String> {
    strip_controls(raw)
        .split(['\r', '\n'])
        .map(str::to_string)
        .collect()
}

/// Pids of the processes `pid` started (from every one of its threads).
fn children(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(list) = std::fs::read_to_string(path) {
            kids.extend(list.split_whitespace().map(|p| p.parse::<i32>().unwrap()));
        }
    }
    kids
}

fn db(home: &common::Home) -> Connection {
    Connection::open(home.path().join("data").join("history.db")).expect("history database exists")
}

/// (id, parent, role, content, model, finish_reason, prompt_tokens, completion_tokens, conversation)
type Row = (
    i64,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
);

fn messages(home: &common::Home) -> Vec<Row> {
    let conn = db(home);
    let mut stmt = conn
        .prepare("SELECT id, parent_id, role, content, model, finish_reason, prompt_tokens, completion_tokens, conversation_id FROM messages ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn a_turn_streams_is_stored_and_branches_show_in_history() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    chat.line("/set temperature 0");
    chat.expect("temperature 0");
    chat.line("/set max_tokens 12");
    chat.expect(PROMPT);
    let shown = chat.turn("Paris is the capital of which country?");
    assert!(shown.contains("tokens"), "{shown}");

    chat.line("/retry");
    chat.expect("tok/s");
    chat.expect(PROMPT);
    chat.line("/fork");
    chat.expect("forked");
    chat.turn("Tell me about the river Seine.");

    chat.line("/search Seine");
    let found = chat.expect(PROMPT);
    assert!(found.contains("#1") && found.contains("Seine"), "{found}");
    chat.line("/frobnicate");
    assert!(chat.expect(PROMPT).contains("unknown command /frobnicate"));
    chat.line("/set temperature hot");
    assert!(chat.expect(PROMPT).contains("not a number"));
    chat.quit();

    let rows = messages(&home);
    let users: Vec<&Row> = rows.iter().filter(|r| r.2 == "user").collect();
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(users.len(), 2, "{rows:?}");
    assert_eq!(replies.len(), 3, "{rows:?}");
    // /retry: two replies to the first message (siblings).
    assert_eq!(replies[0].1, Some(users[0].0));
    assert_eq!(replies[1].1, Some(users[0].0));
    // /fork: the second question branches from before the first one (a second root).
    assert_eq!(users[1].1, None, "{rows:?}");
    for r in &replies {
        assert!(
            matches!(r.5.as_deref(), Some("length") | Some("stop")),
            "{r:?}"
        );
        assert_eq!(r.4.as_deref(), Some("gemma3-270m"));
        assert!(r.7.unwrap() > 0);
    }
    // `history show` displays the branches.
    let out = home.run(&["history", "show", "1"]);
    let shown = common::stdout(&out);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(shown.contains("branch"), "{shown}");
    assert!(
        shown.contains("Seine") && shown.contains("Paris"),
        "{shown}"
    );
}

#[test]
fn lines_that_arrive_together_are_each_taken_in_turn() {
    // Three lines in one write: the shell reads them in one go, as it does lines typed ahead on a
    // busy machine or sent by a script. Each must be taken at its own prompt; the line editor
    // used to drop all but the first, and the shell then sat at its prompt with the message gone.
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    chat.session
        .send("/set max_tokens 3\n/set temperature 0\nThe capital of France is\n")
        .unwrap();
    // The settings lines each command prints (the typed lines are echoed without the `·`).
    chat.expect("max_tokens 3 · seed random");
    chat.expect("temperature 0 · top_k");
    chat.expect("tok/s");
    chat.expect(PROMPT);
    chat.quit();

    let rows = messages(&home);
    let users: Vec<&Row> = rows.iter().filter(|r| r.2 == "user").collect();
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(users.len(), 1, "{rows:?}");
    assert_eq!(users[0].3, "The capital of France is");
    assert_eq!(replies.len(), 1, "{rows:?}");
    let tokens = replies[0].7.unwrap();
    assert!(
        (1..=3).contains(&tokens),
        "the reply was not bound by the typed-ahead max_tokens 3: {rows:?}"
    );
}

#[test]
fn ctrl_c_stops_the_reply_keeps_the_shell_and_stores_the_partial_reply() {
    let home = home_with_models();
    let mut chat = long_reply_under_way(&home);
    std::thread::sleep(Duration::from_millis(300));
    chat.session.send([3u8]).unwrap();
    chat.session
        .set_expect_timeout(Some(Duration::from_secs(10)));
    chat.expect("reply stopped");
    chat.expect(PROMPT);
    chat.session.set_expect_timeout(Some(WAIT));
    // Ctrl-C on an empty line explains how to leave, and the shell stays.
    chat.session.send([3u8]).unwrap();
    chat.expect("/quit or press Ctrl-D");
    // The shell still works after a stopped reply.
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);
    chat.turn("The capital of France is");
    // Ctrl-D leaves.
    chat.session.send([4u8]).unwrap();
    chat.session.expect(Eof).unwrap();

    let rows = messages(&home);
    let cancelled: Vec<&Row> = rows
        .iter()
        .filter(|r| r.5.as_deref() == Some("cancelled"))
        .collect();
    assert_eq!(cancelled.len(), 1, "{rows:?}");
    assert!(
        !cancelled[0].3.trim().is_empty(),
        "the partial reply was not kept"
    );
    assert!(cancelled[0].7.unwrap() < 3000);
}

#[test]
fn model_switch_continues_the_conversation_and_continue_resumes_with_context() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    chat.line("/set max_tokens 8");
    chat.expect(PROMPT);
    chat.turn("My name is Alice and I live in Lyon.");
    chat.line("/model second");
    chat.expect("now on second");
    chat.expect(PROMPT);
    chat.turn("Where do I live?");
    chat.line("/show");
    let shown = chat.expect(PROMPT);
    assert!(shown.contains("second") && shown.contains("CPU"), "{shown}");
    chat.quit();

    let mut chat = Chat::start(&home, &["--continue"]);
    chat.line("/set max_tokens 8");
    chat.expect(PROMPT);
    chat.turn("What is my name?");
    chat.quit();

    let rows = messages(&home);
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(replies.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.8 == rows[0].8),
        "every turn belongs to one conversation: {rows:?}"
    );
    assert_eq!(replies[0].4.as_deref(), Some("gemma3-270m"));
    assert_eq!(
        replies[1].4.as_deref(),
        Some("second"),
        "the reply after /model came from the new model"
    );
    assert_eq!(
        replies[2].4.as_deref(),
        Some("second"),
        "--continue keeps the conversation's model"
    );
    // What the engine was sent: each later prompt covers the earlier turns.
    let (p1, c1) = (replies[0].6.unwrap(), replies[0].7.unwrap());
    let p2 = replies[1].6.unwrap();
    let p3 = replies[2].6.unwrap();
    assert!(
        p2 > p1 + c1,
        "turn 2 prompt ({p2}) does not cover turn 1 ({p1} + {c1})"
    );
    assert!(
        p3 > p2,
        "the resumed turn's prompt ({p3}) does not cover the earlier turns ({p2})"
    );
}

#[test]
fn sigkill_mid_reply_leaves_an_intact_database_with_the_users_message() {
    let home = home_with_models();
    let mut chat = long_reply_under_way(&home);
    // SAFETY: kill(2) only sends a signal to a process this test started.
    unsafe { libc::kill(chat.pid(), libc::SIGKILL) };
    let _ = chat.session.expect(Eof);

    let conn = db(&home);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows = messages(&home);
    assert!(
        rows.iter().any(|r| r.2 == "user" && r.3 == "Once upon"),
        "{rows:?}"
    );
    // The reply was in progress: stored without a finish reason (unfinished), not lost or corrupt.
    assert!(
        rows.iter().any(|r| r.2 == "assistant" && r.5.is_none()),
        "{rows:?}"
    );
}

#[test]
fn multi_line_input_no_log_and_export() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m", "--no-log"]);
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);
    chat.line("\"\"\"First line");
    chat.expect("... ");
    chat.line("second line\"\"\"");
    chat.expect("tok/s");
    chat.expect(PROMPT);
    chat.line("/export md");
    assert!(chat.expect(PROMPT).contains("history is off"));
    chat.quit();
    assert!(
        !home.path().join("data").join("history.db").exists(),
        "--no-log must not create a database"
    );

    let mut chat = Chat::start(
        &home,
        &["--model", "gemma3-270m", "--system", "Answer briefly."],
    );
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);
    chat.turn("Hello there");
    let out = home.path().join("conversation.md");
    chat.line(&format!("/export md {}", out.display()));
    chat.expect("written to");
    chat.quit();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("Hello there") && text.contains("Answer briefly."),
        "{text}"
    );
}

#[test]
fn a_conversation_longer_than_the_context_drops_its_oldest_turns_with_a_notice() {
    let home = home_with_models();
    // A 160-token context: three of these exchanges no longer fit.
    let mut chat = Chat::start_with_env(
        &home,
        &["--model", "gemma3-270m", "--system", "Be brief."],
        &[("GEMMACTL_CONTEXT", "160")],
    );
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);
    let long = "Here is a fairly long message about rivers, mountains, valleys, forests and the sea, written only to fill the context window quickly";
    let mut noticed = false;
    for i in 0..6 {
        let shown = chat.turn(&format!("{long} (part {i})."));
        let notices = shown.matches("no longer sent").count();
        assert!(notices <= 1, "the notice is said once per turn: {shown}");
        noticed |= notices == 1;
    }
    assert!(noticed, "no notice that the oldest turns were dropped");
    chat.line("/show");
    let shown = chat.expect(PROMPT);
    assert!(
        shown.contains("not sent") && shown.contains("Be brief."),
        "{shown}"
    );
    chat.quit();
    // Every turn still got a reply, and everything is stored.
    let rows = messages(&home);
    assert_eq!(rows.iter().filter(|r| r.2 == "user").count(), 6);
    assert!(
        rows.iter()
            .filter(|r| r.2 == "assistant")
            .all(|r| r.5.as_deref() != Some("error")),
        "{rows:?}"
    );
}

#[test]
fn a_line_that_is_not_utf8_is_named_and_the_shell_stays_at_the_prompt() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    // `Caf` + the Latin-1 byte for `é` + Enter, as a terminal in another encoding sends it.
    chat.session.send(b"Caf\xE9\r").unwrap();
    let shown = chat.expect(PROMPT);
    assert!(
        shown.contains("not valid UTF-8") && shown.contains("byte 3 of the line, after \"Caf\""),
        "{shown}"
    );
    assert!(!shown.contains("invalid data"), "{shown}");
    // Still at the prompt, still working.
    chat.line("/show");
    chat.expect("parameters:");
    chat.expect(PROMPT);
    chat.quit();
    assert!(
        !home.path().join("data").join("history.db").exists() || messages(&home).is_empty(),
        "nothing was stored"
    );
}

#[test]
fn a_message_longer_than_the_context_is_refused_kept_and_left_out() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "chatty", "--context", "256"]);
    chat.line("/set temperature 0");
    chat.expect(PROMPT);
    chat.line("/set max_tokens 8");
    chat.expect(PROMPT);
    // About 400 tokens: alone longer than the whole 256-token context. (Longer is no better a
    // test, and a terminal redraws a typed line on every key: 2,000 tokens take minutes to echo.)
    let long = "river mountain valley forest ".repeat(100);
    chat.line(&long);
    // The echo of a line this long redraws the prompt as it goes: wait for the answer itself.
    let mut shown = chat.expect("refused");
    shown.push_str(&chat.expect(PROMPT));
    let shown = shown.replace("\r\n", " ");
    assert!(
        shown.contains("more than the 256-token context") && shown.contains("marked"),
        "{shown}"
    );
    // The next message is answered: the refused one is not sent again.
    let shown = chat.turn("Hello");
    assert!(!shown.contains("error"), "{shown}");
    chat.quit();

    let conn = db(&home);
    let refused: Vec<(String, i64)> = conn
        .prepare("SELECT content, refused FROM messages WHERE role = 'user' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].1, 1, "the long message is kept, marked refused");
    assert!(refused[0]
        .0
        .starts_with("river mountain valley forest river"));
    assert_eq!(refused[1].1, 0);
    let rows = messages(&home);
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(replies[0].5.as_deref(), Some("error"), "{rows:?}");
    assert!(
        replies[1].6.unwrap() < 64,
        "the refused message was sent again: {rows:?}"
    );
}

/// A reply cut because the context is full says so, and is stored with finish reason `context`.
/// The shell reads these lines from a pipe (as from a script): the note is the same as on a
/// terminal, where it was also checked by hand.
#[test]
fn a_reply_cut_by_the_context_says_so_and_is_stored_as_context() {
    let home = home_with_models();
    let mut cmd = home.cmd();
    cmd.args(["chat", "--model", "chatty", "--context", "256"]);
    let out = common::run_bounded_with_stdin(
        cmd,
        b"/set temperature 0\n/set max_tokens 3000\nOnce upon\n",
    );
    let said = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("cut short") && said.contains("256-token context"),
        "{said}"
    );
    let rows = messages(&home);
    let reply = rows.iter().find(|r| r.2 == "assistant").unwrap();
    assert_eq!(reply.5.as_deref(), Some("context"), "{rows:?}");
}

#[test]
fn ctrl_c_while_the_model_loads_stores_an_empty_reply_that_is_not_context() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "chatty"]);
    chat.line("/set temperature 0");
    chat.expect(PROMPT);
    chat.line("/set max_tokens 1");
    chat.expect(PROMPT);
    chat.line("Tell me about cats");
    // After the line is taken (the terminal is back in cooked mode), while the engine loads.
    std::thread::sleep(Duration::from_millis(150));
    chat.session.send([3u8]).unwrap();
    let shown = chat.expect(PROMPT);
    assert!(shown.contains("stopped before it began"), "{shown}");
    chat.turn("And dogs?");
    // The same two messages alone, each in a conversation of its own.
    chat.line("/new");
    chat.expect(PROMPT);
    chat.turn("Tell me about cats");
    chat.line("/new");
    chat.expect(PROMPT);
    chat.turn("And dogs?");
    chat.quit();

    let rows = messages(&home);
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(replies.len(), 4, "{rows:?}");
    assert_eq!(
        (replies[0].3.as_str(), replies[0].5.as_deref()),
        ("", Some("cancelled")),
        "{rows:?}"
    );
    let (both, cats, dogs) = (
        replies[1].6.unwrap(),
        replies[2].6.unwrap(),
        replies[3].6.unwrap(),
    );
    // Gemma's template: BOS and `<start_of_turn>model\n` come once, not twice; an empty reply
    // sent along would add `<start_of_turn>model\n<end_of_turn>\n`, 5 tokens.
    assert_eq!(both, cats + dogs - 4, "{rows:?}");
}

#[test]
fn history_that_cannot_be_written_mid_chat_does_not_stop_the_chat() {
    let home = home_with_models();
    let data = home.path().join("data");
    // As root, the data folder is a small tmpfs that can be filled mid-chat.
    std::fs::create_dir_all(&data).unwrap();
    let tmpfs = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    let _unmount = Unmount(tmpfs.then(|| data.clone()));
    let mut chat = Chat::start(&home, &["--model", "chatty"]);
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);
    chat.turn("Hello");
    if tmpfs {
        let filler = data.join("filler");
        {
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0u8; 64 * 1024];
            while std::io::Write::write_all(&mut f, &block).is_ok() {}
            while std::io::Write::write_all(&mut f, &[0]).is_ok() {}
        }
        let shown = chat.turn("On a full disk");
        assert!(
            shown.contains("not saved to history") && shown.contains("disk is full"),
            "{shown}"
        );
        std::fs::remove_file(&filler).unwrap();
        chat.turn("Room again");
    }
    // The database is moved away while the chat has it open: it cannot be written any more.
    std::fs::rename(data.join("history.db"), data.join("moved.db")).unwrap();
    let shown = chat.turn("After the move");
    assert!(
        shown.contains("not saved to history") && shown.contains("moved or deleted"),
        "{shown}"
    );
    chat.quit();
}

/// Unmounts a test's tmpfs (lazily) when the test ends, however it ends.
struct Unmount(Option<std::path::PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(at) = &self.0 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(at)
                .status();
        }
    }
}
fn user_messages(home: &common::Home) -> Vec<String> {
    messages(home)
        .into_iter()
        .filter(|r| r.2 == "user")
        .map(|r| r.3)
        .collect()
}

#[test]
fn only_a_typed_line_is_a_command_pasted_and_escaped_text_is_sent_as_written() {
    let home = home_with_models();
    let mut chat = Chat::start_with_env(
        &home,
        &["--model", "gemma3-270m"],
        &[("VISUAL", "truncate -s 0")],
    );
    chat.line("/set max_tokens 2");
    chat.expect(PROMPT);
    // The issue's paste: code opening with a `//` comment, ending in a newline.
    let code =
        "// add two numbers\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\nExplain this code.\n";
    chat.paste(code);
    chat.line("");
    let shown = chat.reply();
    assert!(!shown.contains("unknown command"), "{shown}");
    // One line, pasted: a path is not a command either.
    chat.paste("/etc/hosts maps names to addresses. Why?");
    chat.line("");
    chat.reply();
    // Typed: `//` stands for one `/`, a leading space is dropped; both send a message.
    chat.line("//help");
    chat.reply();
    chat.line(" /usr/bin/env is missing");
    chat.reply();
    // A `"""` block is a message even when its only line looks like a command.
    chat.line("\"\"\"");
    chat.expect("... ");
    chat.line("/model second");
    chat.expect("... ");
    chat.line("\"\"\"");
    chat.reply();
    // A typed command is still one, and a mistyped one says how to send it as a message.
    chat.line("/frobnicate");
    let hint = chat.expect(PROMPT);
    assert!(
        hint.contains("unknown command /frobnicate") && hint.contains("//"),
        "{hint}"
    );
    // An editor that empties the file: said so, nothing sent.
    chat.line("/edit");
    let edited = chat.expect(PROMPT);
    assert!(edited.contains("empty: nothing sent"), "{edited}");
    chat.quit();

    assert_eq!(
        user_messages(&home),
        vec![
            code.trim_end().to_string(),
            "/etc/hosts maps names to addresses. Why?".to_string(),
            "/help".to_string(),
            "/usr/bin/env is missing".to_string(),
            "/model second".to_string(),
        ]
    );
}

#[test]
fn lines_arriving_in_one_read_are_each_taken_in_turn() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    // As `tmux send-keys 'a' Enter 'b' Enter`, `expect` or a script sends them: one write.
    chat.session
        .send("/set max_tokens 2\rfirst question\rsecond question\r")
        .unwrap();
    chat.expect("max_tokens 2");
    chat.expect("finish ");
    chat.expect("second question");
    chat.reply();
    chat.quit();

    let rows = messages(&home);
    let users: Vec<&Row> = rows.iter().filter(|r| r.2 == "user").collect();
    let replies: Vec<&Row> = rows.iter().filter(|r| r.2 == "assistant").collect();
    assert_eq!(users.len(), 2, "{rows:?}");
    assert_eq!(users[0].3, "first question");
    assert_eq!(users[1].3, "second question");
    // In order, each answered: the second question follows the first reply.
    assert_eq!(replies.len(), 2, "{rows:?}");
    assert_eq!(users[1].1, Some(replies[0].0), "{rows:?}");
    assert_eq!(replies[1].1, Some(users[1].0), "{rows:?}");
}

#[test]
fn keys_typed_during_a_reply_are_not_shown_in_it_and_wait_for_the_next_prompt() {
    let home = home_with_models();
    let (mut chat, _) = long_reply_shown(&home);
    // A command and a message ended with Enter, then the start of another line.
    chat.session
        .send("/set max_tokens 2\rqueued zqxv\rpartial zqxv")
        .unwrap();
    // The reply streams on for a while (it rambles for thousands of tokens): the keys must not
    // show up in it. (Read now: Ctrl-C could discard echoed text not yet read.)
    chat.session
        .set_expect_timeout(Some(Duration::from_secs(3)));
    let echoed = chat.session.expect("zqxv");
    chat.session.set_expect_timeout(Some(WAIT));
    assert!(echoed.is_err(), "typed keys were echoed into the reply");
    // Ctrl-C stops the reply and keeps what was typed ahead.
    chat.session.send([3u8]).unwrap();
    let during = chat.expect("reply stopped");
    assert!(
        !during.contains("zqxv"),
        "typed keys garbled the reply: {during}"
    );
    // Then the typed lines are taken as if typed at the prompt, in order.
    chat.expect("max_tokens 2");
    chat.expect("queued zqxv");
    chat.expect("finish ");
    chat.expect("partial zqxv");
    chat.line(" sent");
    chat.reply();
    chat.quit();

    assert_eq!(
        user_messages(&home),
        vec!["Once upon", "queued zqxv", "partial zqxv sent"]
    );
}

#[test]
fn input_history_is_appended_by_each_shell_as_it_goes() {
    let home = home_with_models();
    let mut first = Chat::start(&home, &["--model", "gemma3-270m"]);
    let mut second = Chat::start(&home, &["--model", "gemma3-270m"]);
    first.line("/set top_k 7");
    first.expect("top_k 7");
    first.expect(PROMPT);
    second.line("/set top_k 9");
    second.expect("top_k 9");
    second.expect(PROMPT);
    // The first shell is killed: its line is kept all the same.
    // SAFETY: kill(2) only sends a signal to a process this test started.
    unsafe { libc::kill(first.pid(), libc::SIGKILL) };
    let _ = first.session.expect(Eof);
    // Ctrl-D leaves without an entry of its own (`/quit` would be one).
    second.session.send([4u8]).unwrap();
    second.session.expect(Eof).unwrap();

    let mut third = Chat::start(&home, &["--model", "gemma3-270m"]);
    let up = "\x1b[A";
    third.session.send(up).unwrap();
    third.expect("/set top_k 9");
    third.session.send(up).unwrap();
    third.expect("/set top_k 7");
    // Ctrl-U clears the recalled line; the shell leaves as usual.
    third.session.send([0x15u8]).unwrap();
    third.quit();
}

#[test]
fn help_the_banner_and_tables_fit_80_and_40_columns() {
    let home = home_with_models();
    let mut chat = Chat::start_in_width(&home, 40, &["--model", "gemma3-270m"]);
    let fits = |raw: &str, width: usize| {
        for piece in screen_pieces(raw) {
            assert!(
                console::measure_text_width(&piece) <= width,
                "wider than {width} columns: {piece:?}"
            );
        }
    };
    fits(&chat.banner, 40);
    assert!(chat.banner.contains("Ctrl-D"), "{}", chat.banner);
    chat.line("/set max_tokens 2");
    chat.expect(PROMPT);
    chat.line("Tell me about the river Seine in France");
    chat.reply();
    chat.line("/help");
    let help = chat.expect(PROMPT);
    fits(&help, 40);
    for word in [
        "conversations",
        "Ctrl-D",
        "$EDITOR",
        "/export",
        "[MESSAGE_ID]",
    ] {
        assert!(
            help.split_whitespace()
                .any(|w| w.trim_matches(['(', ')', ',']) == word),
            "{word} is not whole in {help}"
        );
    }
    chat.line("/history");
    let history = chat.expect(PROMPT);
    fits(&history, 40);
    for word in ["Tell", "river", "Seine", "France"] {
        assert!(
            history.split_whitespace().any(|w| w == word),
            "{word} in {history}"
        );
    }
    chat.line("/ps");
    let ps = chat.expect(PROMPT);
    fits(&ps, 40);
    assert!(
        ps.split_whitespace().any(|w| w == "gemma3-270m") && ps.contains("ready"),
        "{ps}"
    );
    // Wider again: two columns, each line within 80.
    chat.session
        .get_process_mut()
        .set_window_size(80, 60)
        .unwrap();
    chat.line("/help");
    let help = chat.expect(PROMPT);
    fits(&help, 80);
    assert!(
        help.lines()
            .any(|l| l.contains("/model [NAME]") && l.contains("show the model")),
        "{help}"
    );
    chat.quit();
}

#[test]
fn what_was_shown_is_stored_when_gemmactl_is_killed_mid_reply() {
    let home = home_with_models();

    // SIGKILL: nothing can run at the kill, so the bound is the partial save's interval. The
    // engine is paused first: once the screen has stood still for far longer than 250 ms, the
    // database must hold all of it.
    let (mut chat, mut shown) = long_reply_shown(&home);
    let engine = children(chat.pid());
    assert_eq!(engine.len(), 1, "one engine runs: {engine:?}");
    // SAFETY: kill(2) only sends signals to processes this test started.
    unsafe { libc::kill(engine[0], libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: as above.
    unsafe { libc::kill(chat.pid(), libc::SIGKILL) };
    shown.push_str(&chat.expect_all(Eof));
    let rows = messages(&home);
    let reply = rows.last().unwrap();
    assert_eq!(reply.2, "assistant");
    assert_eq!(reply.5, None, "killed: the reply has no finish");
    assert!(!reply.3.is_empty());
    assert_eq!(reply.3.trim(), reply_text(&shown, "Once upon"));

    // SIGTERM and SIGHUP: the shell stops the reply, stores all of it, and leaves as the signal
    // would have it.
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        let (mut chat, mut shown) = long_reply_shown(&home);
        // SAFETY: kill(2) only sends a signal to a process this test started.
        unsafe { libc::kill(chat.pid(), signal) };
        shown.push_str(&chat.expect_all(Eof));
        let status = chat.session.get_process().wait().unwrap();
        assert_eq!(
            status,
            expectrl::WaitStatus::Exited(chat.session.get_process().pid(), 128 + signal),
            "signal {signal}"
        );
        let rows = messages(&home);
        let reply = rows.last().unwrap();
        assert_eq!(reply.5.as_deref(), Some("cancelled"), "signal {signal}");
        assert!(!reply.3.is_empty());
        assert_eq!(
            reply.3.trim(),
            reply_text(&shown, "Once upon"),
            "signal {signal}"
        );
    }
}

#[test]
fn prompt_progress_stats_and_what_history_says_about_a_turn() {
    let home = home_with_models();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    chat.line("/set temperature 0.7");
    chat.expect(PROMPT);
    chat.line("/set max_tokens 1");
    chat.expect(PROMPT);
    let shown = chat.reply_to("The capital of France is");
    assert!(shown.contains("[1 token ·"), "{shown}");
    assert!(!says_1_tokens(&shown), "{shown}");

    // A long prompt: the spinner says how far the model has read it. Stopped there, the reply
    // has no text, no rates and no first-token time to show.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(150);
    chat.line(&long);
    chat.expect_all(Regex(r"reading the prompt: \d+ of \d+ tokens \(\d+%\)"));
    chat.session.send([3u8]).unwrap();
    let stopped = chat.expect(PROMPT);
    assert!(stopped.contains("reply stopped"), "{stopped}");
    for absent in ["0.0 tok/s", "first token 0 ms"] {
        assert!(!stopped.contains(absent), "{absent}: {stopped}");
    }
    assert!(!says_1_tokens(&stopped), "{stopped}");
    if stopped.contains("what was written is kept") {
        let rows = messages(&home);
        assert!(!rows.last().unwrap().3.is_empty(), "nothing was written");
    }
    chat.quit();

    // The conversation was last updated when its last reply ended.
    let conn = db(&home);
    let (updated, completed): (String, String) = conn
        .query_row(
            "SELECT c.updated_at, max(m.completed_at) FROM conversations c JOIN messages m ON m.conversation_id = c.id GROUP BY c.id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(updated, completed);
    // One temperature, written the same way by `history show --json` and the export.
    let show = common::stdout(&home.run(&["history", "show", "1", "--json"]));
    let export = common::stdout(&home.run(&["history", "export", "1", "--format", "jsonl"]));
    for text in [&show, &export] {
        let temperatures: Vec<&str> = text
            .split("\"temperature\":")
            .skip(1)
            .map(|rest| {
                rest.trim_start()
                    .split([',', '}', '\n'])
                    .next()
                    .unwrap()
                    .trim()
            })
            .collect();
        assert!(!temperatures.is_empty(), "{text}");
        assert!(temperatures.iter().all(|t| *t == "0.7"), "{temperatures:?}");
    }
}

/// Whether `text` counts one thing in the plural ("1 tokens"; "11 tokens" is fine).
fn says_1_tokens(text: &str) -> bool {
    text.match_indices("1 tokens")
        .any(|(i, _)| !text[..i].ends_with(|c: char| c.is_ascii_digit()))
}

#[test]
fn an_image_is_completed_attached_shown_cleared_and_sent_with_the_next_message() {
    let home = home_with_models();
    let pics = home.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    let kitten = pics.join("kitten-photo.png");
    image::RgbImage::from_pixel(10, 6, image::Rgb([90, 60, 30]))
        .save_with_format(&kitten, image::ImageFormat::Png)
        .unwrap();
    let mut chat = Chat::start(&home, &["--model", "gemma3-270m"]);
    chat.line("/set max_tokens 4");
    chat.expect(PROMPT);

    // Tab completes the file name; Enter attaches it, and the shell says what it is.
    chat.session
        .send(format!("/image {}/kit\t", pics.display()))
        .unwrap();
    chat.expect("ten-photo.png");
    chat.session.send_line("").unwrap();
    let said = chat.expect(PROMPT);
    assert!(
        said.contains("attached kitten-photo.png, image/png, ") && said.contains(", 10×6"),
        "{said}"
    );
    chat.line("/image");
    let shown = chat.expect(PROMPT);
    assert!(
        shown.contains("attached: kitten-photo.png, image/png"),
        "{shown}"
    );
    chat.line("/image -");
    assert!(chat.expect(PROMPT).contains("cleared 1 attached image"));
    chat.line("/image");
    assert!(chat.expect(PROMPT).contains("no image attached"));
    chat.line("/image /nonexistent/cat.png");
    let err = chat.expect(PROMPT);
    assert!(
        err.contains("image /nonexistent/cat.png does not exist: check the path"),
        "{err}"
    );

    // Attached and sent: the text-only model cannot see it, which the shell says in the
    // model's name; the message is stored with its image, and the attachment is spent.
    chat.line(&format!("/image {}", kitten.display()));
    chat.expect(PROMPT);
    chat.line("What is in this picture?");
    let refused = chat.expect(PROMPT);
    assert!(
        refused.contains(
            "gemma3-270m cannot see images: register a vision model with --mmproj, see README"
        ),
        "{refused}"
    );
    chat.line("/image");
    assert!(chat.expect(PROMPT).contains("no image attached"));
    chat.quit();
    let (content, sha): (String, String) = db(&home)
        .query_row(
            "SELECT m.content, i.sha256 FROM message_images i JOIN messages m ON m.id = i.message_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(content, "What is in this picture?");
    assert_eq!(
        sha,
        image_input::sha256_hex(&std::fs::read(&kitten).unwrap())
    );
}
