//! `gemmactl run` end to end: the real binary, the real engine, the real default model.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn greedy_run_continues_about_france() {
    let home = common::home_with_model();
    let out = home.run(&[
        "run",
        "--model",
        "gemma3-270m",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "The capital of France is",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(
        text.contains("France") || text.contains("Paris"),
        "{text:?}"
    );
    assert!(text.ends_with('\n'));
    // Nothing but the reply on stdout: no progress, no logs.
    assert!(
        !text.contains("loading") && !text.contains("INFO"),
        "{text:?}"
    );
}

#[test]
fn default_model_stats_json_and_stdin() {
    let home = common::home_with_model();
    let mut child = home
        .cmd()
        .args([
            "run",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--json",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"The capital of France is\n")
        .unwrap();
    let out = wait_output(child);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["model"], "gemma3-270m");
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(v["engine"]["backend"], "CPU");
    assert!(v["text"].as_str().unwrap().len() > 3);
    assert!(v["timings"]["ttft_ms"].as_f64().unwrap() > 0.0);

    let out = home.run(&[
        "run",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--stats",
        "--system",
        "Be brief.",
        "Hello",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("tok/s decode") && err.contains("first token") && err.contains("on CPU"),
        "{err}"
    );
}

#[test]
fn bad_models_and_flags_fail_with_one_clear_sentence() {
    let home = common::Home::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--model".into(), "/nonexistent/model.gguf".into()],
            "/nonexistent/model.gguf",
        ),
        (
            vec!["--model".into(), "no-such-model".into()],
            "known models",
        ),
    ];
    for (args, expect) in cases {
        let mut all = vec!["run".to_string()];
        all.extend(args);
        all.push("hi".into());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = home.run(&refs);
        assert!(!out.status.success());
        let err = common::stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(expect), "{err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one sentence expected: {err}"
        );
        assert!(!err.contains("panicked"));
    }

    let text = home.path().join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let out = home.run(&["run", "--model", text.to_str().unwrap(), "hi"]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("notes.gguf") && err.to_lowercase().contains("gguf"),
        "{err}"
    );

    let out = home.run(&[
        "run",
        "--model",
        common::default_model().to_str().unwrap(),
        "--temperature",
        "-1",
        "hi",
    ]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("--temperature"),
        "{}",
        common::stderr(&out)
    );

    let out = home.run(&[
        "run",
        "--model",
        common::default_model().to_str().unwrap(),
        "",
    ]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("prompt is empty"));
}

#[test]
fn engine_killed_mid_reply_is_reported_with_its_signal() {
    let home = common::home_with_model();
    let mut child = spawn_long_run(&home);
    let engine = engine_of(child.id());
    wait_for_output(&mut child);
    // SAFETY: kill(2) only sends a signal to a process this test started.
    unsafe { libc::kill(engine as i32, libc::SIGKILL) };
    let out = wait_output(child);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("SIGKILL") && err.contains("gemma-engine"),
        "{err}"
    );
}

#[test]
fn no_engine_survives_gemmactl_killed_by_sigterm_sigint_or_sigkill() {
    let home = common::home_with_model();
    for (sig, code) in [
        (libc::SIGTERM, Some(143)),
        (libc::SIGINT, Some(130)),
        (libc::SIGKILL, None),
    ] {
        let mut child = spawn_long_run(&home);
        let engine = engine_of(child.id());
        wait_for_output(&mut child);
        // SAFETY: kill(2) only sends a signal to a process this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = wait_output(child);
        assert_eq!(
            out.status.code(),
            code,
            "signal {sig}: {}",
            common::stderr(&out)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(engine) {
            assert!(
                Instant::now() < deadline,
                "gemma-engine {engine} outlived gemmactl killed by signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A reply stopped by SIGTERM or SIGINT is stored as cancelled with its token counts,
        // like one stopped in the shell; SIGKILL leaves it unfinished with its text so far.
        let db = rusqlite::Connection::open(home.path().join("data").join("history.db")).unwrap();
        let (reason, prompt, completion): (Option<String>, Option<i64>, Option<i64>) = db
            .query_row(
                "SELECT finish_reason, prompt_tokens, completion_tokens FROM messages
                 WHERE role = 'assistant' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        if sig == libc::SIGKILL {
            assert_eq!(reason, None);
        } else {
            assert_eq!(reason.as_deref(), Some("cancelled"), "signal {sig}");
            assert!(
                prompt.is_some_and(|p| p > 0) && completion.is_some_and(|c| c > 0),
                "signal {sig} stored no usage: prompt {prompt:?}, completion {completion:?}"
            );
        }
    }
}

fn spawn_long_run(home: &common::Home) -> Child {
    home.cmd()
        .args([
            "run",
            "--model",
            "gemma3-270m",
            "--max-tokens",
            "3000",
            "--temperature",
            "0",
            "Once upon a time",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Blocks until the reply has started (the first bytes on stdout).
fn wait_for_output(child: &mut Child) {
    let mut first = [0u8; 1];
    let stdout = child.stdout.as_mut().unwrap();
    let n = stdout.read(&mut first).unwrap();
    assert_eq!(n, 1, "gemmactl ended before replying");
}

/// The pid of the gemma-engine started by `parent`.
fn engine_of(parent: u32) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the parenthesised name: state, ppid, ...
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let name = &stat[stat.find('(').unwrap() + 1..close];
            let ppid: u32 = stat[close + 2..]
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == parent && name == "gemma-engine" {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no gemma-engine child of {parent} appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alive means present and not a zombie (an orphan zombie may linger until its new parent reaps it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let close = stat.rfind(')').unwrap_or(0);
            !stat[close..].starts_with(") Z") && !stat[close..].starts_with(") X")
        }
        Err(_) => false,
    }
}

fn wait_output(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gemmactl did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn run_logs_to_history_and_can_continue_a_conversation() {
    let home = common::home_with_model();
    let run = |args: &[&str]| {
        let mut all = vec![
            "run",
            "--model",
            "gemma3-270m",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ];
        all.extend_from_slice(args);
        let out = home.run(&all);
        assert!(out.status.success(), "{}", common::stderr(&out));
    };
    run(&["My name is Alice and I live in Lyon."]);
    run(&["--continue", "Where do I live?"]);
    run(&["--conversation", "1", "What is my name?"]);
    run(&["--no-log", "This is not stored."]);

    let conn = rusqlite::Connection::open(home.path().join("data").join("history.db")).unwrap();
    // conversation, role, content, finish reason, prompt tokens
    type MessageRow = (i64, String, String, Option<String>, Option<i64>);
    let rows: Vec<MessageRow> = conn
        .prepare("SELECT conversation_id, role, content, finish_reason, prompt_tokens FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows.len(),
        6,
        "three turns of one conversation, and nothing from --no-log: {rows:?}"
    );
    assert!(rows.iter().all(|r| r.0 == 1), "{rows:?}");
    assert!(!rows.iter().any(|r| r.2.contains("not stored")));
    let prompts: Vec<i64> = rows
        .iter()
        .filter(|r| r.1 == "assistant")
        .map(|r| r.4.unwrap())
        .collect();
    assert!(
        rows.iter()
            .filter(|r| r.1 == "assistant")
            .all(|r| r.3.as_deref() == Some("length") || r.3.as_deref() == Some("stop")),
        "{rows:?}"
    );
    // What the engine was sent: each continued turn's prompt covers the turns before it.
    assert!(
        prompts[1] > prompts[0] + 6 && prompts[2] > prompts[1],
        "{prompts:?}"
    );

    let out = home.run(&["run", "--no-log", "--continue", "hi"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("need the history database"));
}

#[test]
fn kv_cache_settings_come_from_flags_env_or_config_and_bad_ones_are_one_sentence() {
    let home = common::home_with_model();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = home.cmd();
        cmd.args(["run", "--max-tokens", "4", "--temperature", "0", "--json"])
            .args(extra)
            .arg("The capital of France is");
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::run_bounded(cmd)
    };

    // From a flag, and from the environment: the engine reports what it was started with.
    for (extra, env, kv, flash) in [
        (&["--kv-cache-type", "q8_0"][..], &[][..], "q8_0", "auto"),
        (
            &[][..],
            &[
                ("GEMMACTL_KV_CACHE_TYPE", "q4_0"),
                ("GEMMACTL_FLASH_ATTENTION", "on"),
            ][..],
            "q4_0",
            "on",
        ),
    ] {
        let out = run(extra, env);
        assert!(out.status.success(), "{}", common::stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["engine"]["kv_cache_type"], kv, "{v}");
        assert_eq!(v["engine"]["flash_attention"], flash, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");
    }
    let out = home.run(&[
        "run",
        "--max-tokens",
        "2",
        "--stats",
        "--kv-cache-type",
        "q8_0",
        "Hello",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("KV cache q8_0"),
        "the stats line should name a KV cache type that is not the default: {}",
        common::stderr(&out)
    );

    // Bad values and the one combination llama.cpp refuses: one sentence each, no engine started.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let bad: [Case; 4] = [
        (
            &["--kv-cache-type", "q4_0", "--flash-attention", "off"],
            &[],
            "needs flash attention",
        ),
        (&["--kv-cache-type", "q3_k"], &[], "is not a KV cache type"),
        (
            &[],
            &[("GEMMACTL_FLASH_ATTENTION", "sometimes")],
            "GEMMACTL_FLASH_ATTENTION",
        ),
        (
            &["--flash-attention", "off"],
            &[("GEMMACTL_KV_CACHE_TYPE", "q8_0")],
            "a q8_0 KV cache needs flash attention",
        ),
    ];
    for (extra, env, said) in bad {
        let out = run(extra, env);
        assert!(!out.status.success(), "{extra:?} {env:?} was accepted");
        let err = common::stderr(&out);
        // The sentence is the first line (clap adds a pointer to --help below its own).
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(said),
            "{extra:?} {env:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // From config.toml; a misspelt value names the file.
    let config = home.path().join("config").join("config.toml");
    std::fs::write(
        &config,
        "[engine]\nkv_cache_type = \"q8_0\"\nflash_attention = \"off\"\n",
    )
    .unwrap();
    let out = run(&[], &[]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("needs flash attention"),
        "{}",
        common::stderr(&out)
    );
    std::fs::write(&config, "[engine]\nkv_cache_type = \"q9\"\n").unwrap();
    let out = run(&[], &[]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("\"q9\" is not a KV cache type"),
        "{err}"
    );
    // Spelt as the flags and the environment take it: case does not matter.
    std::fs::write(&config, "[engine]\nkv_cache_type = \"Q4_0\"\n").unwrap();
    let out = run(&[], &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["engine"]["kv_cache_type"], "q4_0", "{v}");
}
