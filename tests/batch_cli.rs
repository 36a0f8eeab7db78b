//! `gemmactl batch` end to end: the real binary, the real engine, the real default model, real
//! signals (SIGKILL, SIGINT) and a real history database.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest one batch may take here before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(600);

/// One engine thread: these tests check behaviour, not speed, and on a shared machine one thread
/// keeps decoding while two stall each other at every step.
const THREADS: [&str; 2] = ["--threads", "1"];

/// Runs `gemmactl batch ARGS` to its end.
fn batch(home: &common::Home, args: &[&str]) -> std::process::Output {
    let mut all = vec!["batch"];
    all.extend_from_slice(args);
    all.extend_from_slice(&THREADS);
    home.run(&all)
}

/// Writes `lines` (JSON values, or raw text for a malformed line) as a JSONL file in the home.
fn input(home: &common::Home, name: &str, lines: &[Value]) -> PathBuf {
    let path = home.path().join(name);
    let mut text = String::new();
    for line in lines {
        match line {
            Value::String(raw) => text.push_str(raw),
            v => text.push_str(&v.to_string()),
        }
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Every line of a result file, each of which must be whole, valid JSON.
fn results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn last line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

fn ids(records: &[Value], field: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| r[field].as_str().unwrap_or("").to_string())
        .collect()
}

/// Starts `gemmactl batch ARGS` with stderr into `stderr_file` and stdout discarded.
fn spawn(home: &common::Home, args: &[&str], stderr_file: &Path) -> Child {
    home.cmd()
        .arg("batch")
        .args(args)
        .args(THREADS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(stderr_file).unwrap())
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gemmactl batch did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `path` has at least `n` whole lines; `false` if the batch ended first.
fn wait_for_lines(child: &mut Child, path: &Path, n: usize) -> bool {
    let deadline = Instant::now() + WAIT;
    while lines_in(path) < n {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no {n} results within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) only sends a signal to a process this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn fifty_prompts(home: &common::Home) -> PathBuf {
    let subjects = ["France", "Italy", "Spain", "Japan", "Peru"];
    let lines: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("q{i:02}"), "prompt": format!("Fact {i} about {}:", subjects[i % 5])}))
        .collect();
    input(home, "fifty.jsonl", &lines)
}

#[test]
fn fifty_lines_killed_three_times_resume_to_every_id_exactly_once() {
    let home = common::home_with_model();
    let file = fifty_prompts(&home);
    let out = home.path().join("out.jsonl");
    let err = home.path().join("stderr.txt");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let base = [
        f,
        "-o",
        o,
        "--parallel",
        "4",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ];
    let with_resume: Vec<&str> = base.iter().copied().chain(["--resume"]).collect();
    // Three kills at different moments: while the engine loads, after the first results, and
    // past the middle. Each kill must land while lines are still to do.
    for (round, after) in [0usize, 5, 22].into_iter().enumerate() {
        let args: &[&str] = if round == 0 { &base } else { &with_resume };
        let mut child = spawn(&home, args, &err);
        if after == 0 {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            let before = lines_in(&out);
            assert!(
                wait_for_lines(&mut child, &out, before.max(after)),
                "round {round}: the batch ended before the kill: {}",
                std::fs::read_to_string(&err).unwrap()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let unique: HashSet<String> = ids(&results(&out), "id").into_iter().collect();
        assert!(unique.len() < 50, "round {round}: nothing left to resume");
    }
    // A kill in the middle of a write leaves half a line; it cannot be timed, so add one.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    f.write_all(br#"{"id":"q49","line":50,"batch_id":"#)
        .unwrap();
    drop(f);

    let mut child = spawn(&home, &with_resume, &err);
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("dropped a partial last line"), "{stderr}");
    let records = results(&out);
    let got = ids(&records, "id");
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 50, "{got:?}");
    assert_eq!(unique.len(), 50);
    let expected: HashSet<String> = (0..50).map(|i| format!("q{i:02}")).collect();
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), expected);
    for r in &records {
        assert!(r["text"].is_string() && r.get("error").is_none(), "{r}");
        let generated = r["usage"]["completion_tokens"].as_u64().unwrap();
        match r["finish_reason"].as_str().unwrap() {
            "length" => assert_eq!(generated, 4, "{r}"),
            "stop" => assert!(generated < 4, "{r}"),
            other => panic!("finish reason {other}: {r}"),
        }
        let line: usize = r["id"].as_str().unwrap()[1..].parse::<usize>().unwrap() + 1;
        assert_eq!(r["line"], line, "{r}");
    }
    // One batch from the first result to the last, and its lines are in the history.
    let batches: HashSet<&str> = records
        .iter()
        .map(|r| r["batch_id"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let batch_id = batches.into_iter().next().unwrap();
    assert!(stderr.contains(&format!("gemmactl history list --batch {batch_id}")));
    let listed = home.run(&["history", "list", "--batch", batch_id, "--json"]);
    assert!(listed.status.success(), "{}", common::stderr(&listed));
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let lines: HashSet<String> = rows
        .iter()
        .map(|r| {
            r["origin"]["batch"]["line_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(lines, expected);
    assert!(rows.iter().all(|r| r["origin"]["source"] == "batch"));
}

#[test]
fn bad_lines_become_error_records_and_the_good_ones_are_answered() {
    let home = common::home_with_model();
    let long = "word ".repeat(200);
    let file = input(
        &home,
        "mixed.jsonl",
        &[
            json!({"id": "ok1", "prompt": "The capital of France is"}),
            json!("{\"id\": \"broken\", \"prompt\": "),
            json!({"id": "noprompt"}),
            json!({"id": "nomodel", "prompt": "Hi", "model": "no-such-model"}),
            json!({"id": "long", "prompt": long}),
            json!({"id": "badtemp", "prompt": "Hi", "temperature": -1}),
            json!({"id": "ok2", "messages": [{"role": "user", "content": "Say hello."}], "stop": ["\n"]}),
        ],
    );
    let out = batch(
        &home,
        &[
            file.to_str().unwrap(),
            "--context",
            "64",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
        ],
    );
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("7 lines: 2 succeeded, 5 failed, 0 skipped"),
        "{stderr}"
    );
    let records: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 7);
    let by_line = |n: usize| {
        records
            .iter()
            .find(|r| r["line"] == n)
            .unwrap_or_else(|| panic!("no record for line {n}"))
    };
    for (n, code) in [
        (2, "invalid_json"),
        (3, "invalid_request"),
        (4, "model_not_found"),
        (5, "context_length_exceeded"),
        (6, "invalid_request"),
    ] {
        let e = &by_line(n)["error"];
        assert_eq!(e["code"], code, "line {n}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("line {n}: ")), "{message}");
        assert!(stderr.contains(message), "{stderr}");
    }
    assert_eq!(by_line(2)["id"], Value::Null);
    assert_eq!(by_line(6)["error"]["param"], "temperature");
    assert!(by_line(4)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-model"));
    for (n, id) in [(1, "ok1"), (7, "ok2")] {
        let r = by_line(n);
        assert_eq!(r["id"], id);
        assert!(!r["text"].as_str().unwrap().is_empty(), "{r}");
        assert!(r.get("error").is_none());
        assert_eq!(r["model"], "gemma3-270m");
    }
}

#[test]
fn usage_errors_exit_2_before_any_work() {
    let home = common::Home::new();
    let dup = input(
        &home,
        "dup.jsonl",
        &[
            json!({"id": "a", "prompt": "x"}),
            json!({"id": "b", "prompt": "y"}),
            json!({"id": "a", "prompt": "z"}),
        ],
    );
    let out_file = home.path().join("out.jsonl");
    let (d, o) = (dup.to_str().unwrap(), out_file.to_str().unwrap());
    let out = batch(&home, &[d, "-o", o]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("lines 1 and 3 have the same id \"a\""),
        "{stderr}"
    );
    assert!(!out_file.exists(), "nothing is written before the check");

    let missing = home.path().join("nope.jsonl");
    let out = batch(&home, &[missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("cannot read"),
        "{}",
        common::stderr(&out)
    );

    let good = input(&home, "good.jsonl", &[json!({"id": "a", "prompt": "x"})]);
    let g = good.to_str().unwrap();
    std::fs::write(&out_file, "{\"id\":\"a\"}\n").unwrap();
    let out = batch(&home, &[g, "-o", o]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("already has results: add --resume"));
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "{\"id\":\"a\"}\n"
    );

    let out = batch(&home, &[g, "--resume"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("-o OUT.jsonl"));

    let out = batch(&home, &[g, "--model", "no-such-model"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("no-such-model"));

    let out = batch(&home, &[g, "--parallel", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Checks a result line against the OpenAI batch output format, field by field.
fn check_openai_success(r: &Value, custom_id: &str, object: &str) -> String {
    let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from(["id", "custom_id", "response", "error"]),
        "{r}"
    );
    assert!(r["id"].as_str().unwrap().starts_with("batch_req_"));
    assert_eq!(r["custom_id"], custom_id);
    assert_eq!(r["error"], Value::Null);
    let response = &r["response"];
    assert_eq!(response["status_code"], 200);
    assert!(response["request_id"].is_string());
    let body = &response["body"];
    assert_eq!(body["object"], object);
    assert!(body["id"].is_string());
    assert!(body["created"].is_u64());
    assert_eq!(body["model"], "gemma3-270m");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    let choice = &choices[0];
    assert_eq!(choice["index"], 0);
    assert!(
        ["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()),
        "{choice}"
    );
    let text = if object == "chat.completion" {
        assert_eq!(choice["message"]["role"], "assistant");
        choice["message"]["content"].as_str().unwrap()
    } else {
        choice["text"].as_str().unwrap()
    };
    let usage = &body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && (1..=4).contains(&c), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    text.to_string()
}

#[test]
fn an_openai_batch_file_runs_unchanged_and_comes_back_in_its_format() {
    let home = common::home_with_model();
    let file = input(
        &home,
        "openai.jsonl",
        &[
            json!({"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "messages": [
                       {"role": "system", "content": "You are brief."},
                       {"role": "user", "content": "Name a colour."}],
                       "max_tokens": 4, "temperature": 0}}),
            json!({"custom_id": "req-2", "method": "POST", "url": "/v1/completions",
                   "body": {"model": "gpt-4o-mini", "prompt": "The capital of France is",
                            "max_tokens": 4, "temperature": 0}}),
            json!({"custom_id": "req-3", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 2}}),
            json!({"custom_id": "req-4", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gemma3-270m", "messages": [{"role": "user", "content": "Hello"}],
                            "max_completion_tokens": 4, "temperature": 0, "frequency_penalty": 0.5}}),
        ],
    );
    let out_file = home.path().join("out.jsonl");
    let (f, o) = (file.to_str().unwrap(), out_file.to_str().unwrap());
    let out = batch(&home, &[f, "-o", o]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr
            .matches("model gpt-4o-mini is not installed here: its requests run on gemma3-270m")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("ignoring request fields gemmactl does not use: frequency_penalty"));
    let records = results(&out_file);
    assert_eq!(records.len(), 4);
    let find = |id: &str| records.iter().find(|r| r["custom_id"] == id).unwrap();
    check_openai_success(find("req-1"), "req-1", "chat.completion");
    let text = check_openai_success(find("req-2"), "req-2", "text_completion");
    assert!(!text.is_empty());
    check_openai_success(find("req-4"), "req-4", "chat.completion");
    let bad = find("req-3");
    assert_eq!(bad["error"], Value::Null);
    assert_eq!(bad["response"]["status_code"], 400);
    let e = &bad["response"]["body"]["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "n");
    assert!(e["message"].as_str().unwrap().starts_with("line 3: "));

    // Resumed: the answers stay, the failed request is tried again (and fails again), and each
    // custom_id is in the file once.
    let out = batch(&home, &[f, "-o", o, "--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("4 lines: 0 succeeded, 1 failed, 3 skipped"));
    let again = results(&out_file);
    let mut got = ids(&again, "custom_id");
    got.sort();
    assert_eq!(got, ["req-1", "req-2", "req-3", "req-4"]);
}

#[test]
fn stdin_to_stdout_in_input_order_without_history() {
    let home = common::home_with_model();
    // The first line takes 16 decode steps, the others one: they finish first.
    let text = [
        json!({"id": "a", "prompt": "Once upon a time", "max_tokens": 16}),
        json!({"id": "b", "prompt": "One, two,", "max_tokens": 1}),
        json!({"id": "c", "prompt": "Red, green,", "max_tokens": 1}),
        json!({"id": "d", "prompt": "Monday, Tuesday,", "max_tokens": 1}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    let mut child = home
        .cmd()
        .args([
            "batch",
            "-",
            "--ordered",
            "--parallel",
            "4",
            "--temperature",
            "0",
            "--no-log",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    wait(&mut child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let records: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&records, "id"), ["a", "b", "c", "d"]);
    assert_eq!(records[0]["usage"]["completion_tokens"], 16);
    let batch_id = records[0]["batch_id"].as_str().unwrap();
    let listed = home.run(&["history", "list", "--batch", batch_id]);
    assert!(!listed.status.success());
    assert!(common::stderr(&listed).contains("no saved conversation belongs to batch"));
}

#[test]
fn two_models_in_one_file_each_line_on_its_own() {
    let home = common::home_with_model();
    let path = common::default_model();
    let add = home.run(&["models", "add", "second", path.to_str().unwrap()]);
    assert!(add.status.success(), "{}", common::stderr(&add));
    let lines: Vec<Value> = (0..6)
        .map(|i| {
            let model = if i % 2 == 0 { "gemma3-270m" } else { "second" };
            json!({"id": i, "prompt": format!("Number {i} is"), "model": model})
        })
        .collect();
    let file = input(&home, "two.jsonl", &lines);
    let out = batch(
        &home,
        &[
            file.to_str().unwrap(),
            "--parallel",
            "2",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let records: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    for r in &records {
        let i = r["id"].as_u64().unwrap();
        let model = if i % 2 == 0 { "gemma3-270m" } else { "second" };
        assert_eq!(r["model"], model, "{r}");
        assert_eq!(r["usage"]["completion_tokens"], 3);
    }
    // The history says which model answered each line.
    let batch_id = records[0]["batch_id"].as_str().unwrap();
    let listed = home.run(&["history", "list", "--batch", batch_id, "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let models: HashSet<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, HashSet::from(["gemma3-270m", "second"]));
}

#[test]
fn ctrl_c_once_finishes_the_lines_in_flight_twice_cancels_them_and_sigterm_too() {
    let home = common::home_with_model();
    let lines: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("l{i}"), "prompt": format!("Story {i}: once upon a time")}))
        .collect();
    let file = input(&home, "ten.jsonl", &lines);
    let out = home.path().join("out.jsonl");
    let err = home.path().join("stderr.txt");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let base = [
        f,
        "-o",
        o,
        "--parallel",
        "2",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ];
    let with_resume: Vec<&str> = base.iter().copied().chain(["--resume"]).collect();

    // Once: no new lines, but those in flight finish and are written.
    let mut child = spawn(&home, &base, &err);
    assert!(wait_for_lines(&mut child, &out, 1));
    let at_signal = lines_in(&out);
    signal(&child, libc::SIGINT);
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping: taking no new lines"), "{stderr}");
    assert!(stderr.contains("--resume runs them"), "{stderr}");
    let records = results(&out);
    assert!(
        records.len() > at_signal,
        "the lines in flight were not finished"
    );
    assert!(records.len() < 10);
    assert!(records
        .iter()
        .all(|r| r["usage"]["completion_tokens"] == 12 || r["finish_reason"] == "stop"));

    // Twice: the lines in flight are cancelled, and not written.
    let mut child = spawn(&home, &with_resume, &err);
    let before = lines_in(&out);
    assert!(wait_for_lines(&mut child, &out, before + 1));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGINT);
    let status = wait(&mut child);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling the"), "{stderr}");
    let records = results(&out);
    assert!(records
        .iter()
        .all(|r| r["usage"]["completion_tokens"] == 12 || r["finish_reason"] == "stop"));

    // SIGTERM cancels what is in flight at once, like a second Ctrl-C.
    let mut child = spawn(&home, &with_resume, &err);
    let before = lines_in(&out);
    assert!(wait_for_lines(&mut child, &out, before + 1));
    signal(&child, libc::SIGTERM);
    let status = wait(&mut child);
    assert_eq!(
        status.code(),
        Some(143),
        "{}",
        std::fs::read_to_string(&err).unwrap()
    );
    assert!(results(&out).len() < 10);

    // And the rest on resuming.
    let mut child = spawn(&home, &with_resume, &err);
    assert!(wait(&mut child).success());
    let got: HashSet<String> = ids(&results(&out), "id").into_iter().collect();
    assert_eq!(got.len(), 10);
    assert_eq!(lines_in(&out), 10);
}

#[test]
fn two_models_that_do_not_fit_together_take_turns() {
    let home = common::home_with_model();
    let path = common::default_model();
    let add = home.run(&["models", "add", "second", path.to_str().unwrap()]);
    assert!(add.status.success(), "{}", common::stderr(&add));
    let config = home.path().join("config").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    // The engine's memory estimate, from the refusal of a budget nothing fits in.
    std::fs::write(&config, "[supervisor]\nmemory_budget_mib = 1\n").unwrap();
    let probe = input(&home, "probe.jsonl", &[json!({"id": 0, "prompt": "Hi"})]);
    let out = batch(&home, &[probe.to_str().unwrap(), "--parallel", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let message = common::stdout(&out);
    let needed: u64 = message
        .split("needs about ")
        .nth(1)
        .and_then(|rest| rest.split(" MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in {message}"));
    // Room for one engine, not two: lines for the second model wait for the first's to drain.
    std::fs::write(
        &config,
        format!("[supervisor]\nmemory_budget_mib = {}\n", needed * 3 / 2),
    )
    .unwrap();
    let lines: Vec<Value> = (0..6)
        .map(|i| {
            let model = if i % 2 == 0 { "gemma3-270m" } else { "second" };
            json!({"id": i, "prompt": format!("Number {i} is"), "model": model})
        })
        .collect();
    let file = input(&home, "two.jsonl", &lines);
    let out = batch(
        &home,
        &[
            file.to_str().unwrap(),
            "--parallel",
            "2",
            "--max-tokens",
            "2",
            "--temperature",
            "0",
            "--no-log",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let records: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    for r in &records {
        let i = r["id"].as_u64().unwrap();
        let model = if i % 2 == 0 { "gemma3-270m" } else { "second" };
        assert_eq!(r["model"], model, "{r}");
    }
}

/// Batch lines with OpenAI content parts: a data URL and a local file are read, checked and
/// stored; the text-only default model refuses them in its name (an error record each); a bad
/// data URL is the line's own error, named, before any engine is asked.
#[test]
fn image_parts_are_read_checked_and_refused_by_a_model_that_cannot_see() {
    use base64::Engine as _;
    let home = common::home_with_model();
    let pic = home.path().join("pic.png");
    image::RgbImage::from_pixel(5, 5, image::Rgb([1, 2, 3]))
        .save_with_format(&pic, image::ImageFormat::Png)
        .unwrap();
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&pic).unwrap())
    );
    let part = |u: &str| json!({"type": "image_url", "image_url": {"url": u}});
    let text = |t: &str| json!({"type": "text", "text": t});
    let file = input(
        &home,
        "images.jsonl",
        &[
            json!({"id": "data", "messages": [{"role": "user", "content": [part(&url), text("What is it?")]}]}),
            json!({"id": "file", "messages": [{"role": "user", "content": [part(pic.to_str().unwrap()), text("And this?")]}]}),
            json!({"id": "bad", "messages": [{"role": "user", "content": [part("data:image/png;base64,@@"), text("?")]}]}),
        ],
    );
    let out = batch(&home, &[file.to_str().unwrap(), "--max-tokens", "3"]);
    let stderr = common::stderr(&out);
    let records: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: &str| records.iter().find(|r| r["id"] == id).unwrap();
    for id in ["data", "file"] {
        let message = by_id(id)["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(
                "gemma3-270m cannot see images: register a vision model with --mmproj, see README"
            ),
            "{id}: {message} / {stderr}"
        );
    }
    let bad = by_id("bad")["error"]["message"].as_str().unwrap();
    assert!(
        bad.contains("image 1 of message 1 is not valid base64"),
        "{bad}"
    );
    // Both readable lines are stored with their image: the data URL's always copied.
    let db = rusqlite::Connection::open(home.path().join("data/history.db")).unwrap();
    let rows: Vec<(Option<String>, Option<String>)> = db
        .prepare("SELECT path, copy FROM message_images ORDER BY message_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(_, copy)| copy.is_some()));
    assert!(rows
        .iter()
        .any(|(path, _)| path.as_deref() == Some(pic.to_str().unwrap())));
    assert!(rows.iter().any(|(path, _)| path.is_none()));
}
