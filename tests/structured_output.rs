//! Structured output end to end: a JSON Schema or a GBNF grammar holding the replies of the real
//! Gemma 3 270M on the real gemma-engine, through every front end that takes one (`run`,
//! `batch`, `serve` with a real HTTP client, `mcp` with rmcp's client), and every way of getting
//! one wrong refused with a sentence before anything is generated.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mcp_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::server::Server;
use mcp_support::{Era, Server as McpServer};
use serde_json::{json, Value};

/// Nested objects, enums and arrays, with every string and array bounded so that a reply of a
/// small model ends well within its token budget.
fn pet_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20},
            "kind": {"enum": ["cat", "dog", "bird"]},
            "age": {"type": "integer", "minimum": 0, "maximum": 30},
            "owner": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "verified": {"type": "boolean"}
                },
                "required": ["city", "verified"],
                "additionalProperties": false
            },
            "tags": {
                "type": "array",
                "items": {"enum": ["small", "large", "old", "young"]},
                "minItems": 1,
                "maxItems": 3
            }
        },
        "required": ["name", "kind", "age", "owner", "tags"],
        "additionalProperties": false
    })
}

/// A home with the default model registered under its catalogue name.
fn home() -> common::Home {
    common::default_model();
    let home = common::Home::new();
    let out = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    home
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Longest a 25-line batch may take: generous, because the shared test machine may be running
/// several builds at once; a hang still fails the test.
const BATCH_DEADLINE: Duration = Duration::from_secs(1200);

/// Runs gemmactl like `Home::run`, with [`BATCH_DEADLINE`] instead of the harness's bound; its
/// output goes to files, so nothing blocks on a full pipe while it waits.
fn run_long(home: &common::Home, args: &[&str]) -> std::process::Output {
    let out_path = home.path().join("run-long.out");
    let err_path = home.path().join("run-long.err");
    let mut child = home
        .cmd()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + BATCH_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gemmactl {args:?} did not finish within {BATCH_DEADLINE:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// `text` parsed as JSON and checked against `schema`, or a panic naming what is wrong.
fn assert_valid(schema: &Value, text: &str, context: &str) -> Value {
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{context}: the reply is not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    if let Err(e) = validator.validate(&value) {
        panic!("{context}: the reply breaks the schema ({e}): {text}");
    }
    value
}

#[test]
fn run_holds_a_reply_to_a_schema_and_to_a_grammar() {
    let home = home();
    let schema = pet_schema();
    let file = write(home.path(), "pet.json", &schema.to_string());
    let out = home.run(&[
        "run",
        "--temperature",
        "0",
        "--max-tokens",
        "200",
        "--json-schema",
        file.to_str().unwrap(),
        "Describe a pet as JSON:",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_valid(&schema, &common::stdout(&out), "run --json-schema");

    // Cut by the token limit, the reply is printed as far as it got, and the exit says it is
    // incomplete, so a script does not take it for JSON.
    let out = home.run(&[
        "run",
        "--temperature",
        "0",
        "--max-tokens",
        "3",
        "--json-schema",
        file.to_str().unwrap(),
        "Describe a pet as JSON:",
    ]);
    assert!(!out.status.success());
    assert!(
        common::stdout(&out).starts_with('{'),
        "{}",
        common::stdout(&out)
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("reached --max-tokens") && err.contains("raise --max-tokens"),
        "{err}"
    );

    let grammar = write(home.path(), "yn.gbnf", "root ::= (\"yes\" | \"no\")\n");
    let out = home.run(&[
        "run",
        "--temperature",
        "0.9",
        "--seed",
        "3",
        "--grammar",
        grammar.to_str().unwrap(),
        "Is the sky blue?",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(["yes", "no"].contains(&text.trim_end()), "{text:?}");

    // --json reports the reply whole; its finish says the grammar ended it, not the limit.
    let out = home.run(&[
        "run",
        "--temperature",
        "0",
        "--json",
        "--grammar",
        grammar.to_str().unwrap(),
        "Is the sky blue?",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["finish_reason"], "stop", "{v}");
    assert!(["yes", "no"].contains(&v["text"].as_str().unwrap()), "{v}");
}

#[test]
fn run_refuses_a_bad_schema_or_grammar_with_one_sentence() {
    let home = home();
    let dir = home.path();
    let refused = |args: &[&str], needles: &[&str]| {
        let mut all = vec!["run", "--max-tokens", "8"];
        all.extend_from_slice(args);
        all.push("Hello");
        let out = home.run(&all);
        let err = common::stderr(&out);
        assert!(!out.status.success(), "accepted {args:?}: {err}");
        assert!(common::stdout(&out).is_empty(), "generated for {args:?}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        // One sentence on one line: what is wrong and the fix.
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    };
    let missing = dir.join("missing.json");
    refused(
        &["--json-schema", missing.to_str().unwrap()],
        &["--json-schema", "missing.json", "cannot read the file"],
    );
    let not_json = write(dir, "broken.json", "{\"type\": \"object\",");
    refused(
        &["--json-schema", not_json.to_str().unwrap()],
        &["broken.json", "not valid JSON"],
    );
    let array = write(dir, "array.json", "[1, 2]");
    refused(
        &["--json-schema", array.to_str().unwrap()],
        &["array.json", "not an object"],
    );
    let typo = write(
        dir,
        "typo.json",
        r#"{"type": "object", "properties": {"age": {"type": "integr"}}}"#,
    );
    refused(
        &["--json-schema", typo.to_str().unwrap()],
        &["typo.json", "/properties/age/type", "fix"],
    );
    let no_root = write(dir, "noroot.gbnf", "answer ::= \"yes\"\n");
    refused(
        &["--grammar", no_root.to_str().unwrap()],
        &["--grammar", "noroot.gbnf", "root ::="],
    );
    let both = write(dir, "yn.gbnf", "root ::= \"yes\"\n");
    let out = home.run(&[
        "run",
        "--grammar",
        both.to_str().unwrap(),
        "--json-schema",
        array.to_str().unwrap(),
        "Hi",
    ]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("cannot be used with"));
    // Found only by llama.cpp's own parser, in the engine, before any token: still one
    // sentence with the parser's reason, and nothing generated.
    let syntax = write(dir, "syntax.gbnf", "root ::= \"yes\" | [a-\n");
    refused(
        &["--grammar", syntax.to_str().unwrap()],
        &["not valid GBNF", "fix it"],
    );
    let undefined = write(dir, "undefined.gbnf", "root ::= answer\n");
    refused(
        &["--grammar", undefined.to_str().unwrap()],
        &["not valid GBNF", "answer"],
    );
}

/// The issue's test: 50 replies, greedy and sampled, against a schema with nested objects,
/// enums and arrays; every one is JSON that validates.
#[test]
fn fifty_batch_replies_greedy_and_sampled_all_validate() {
    let home = home();
    let schema = pet_schema();
    let subjects = [
        "a cat",
        "a dog",
        "a bird",
        "an old cat",
        "a young dog",
        "a small bird",
        "a large dog",
        "a lazy cat",
        "a loud bird",
        "a happy dog",
    ];
    let mut input = String::new();
    for i in 0..50 {
        let subject = subjects[i % subjects.len()];
        // Half greedy, half sampled with a seed of their own; half with the schema on the line,
        // half with it from --json-schema, so both routes are covered.
        let mut line = json!({
            "id": format!("p{i:02}"),
            "prompt": format!("Describe {subject} (number {i}) as JSON:"),
            "temperature": if i % 2 == 0 { 0.0 } else { 0.9 },
            "seed": i,
        });
        if i % 4 < 2 {
            line["json_schema"] = schema.clone();
        }
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let schema_file = write(home.path(), "pet.json", &schema.to_string());
    // Two files of 25, so that each batch stays well within the harness's bound on one command
    // even on a loaded machine.
    let lines: Vec<&str> = input.lines().collect();
    let mut results: Vec<Value> = Vec::new();
    for (half, chunk) in lines.chunks(25).enumerate() {
        let file = write(
            home.path(),
            &format!("in{half}.jsonl"),
            &(chunk.join("\n") + "\n"),
        );
        let out_file = home.path().join(format!("out{half}.jsonl"));
        let out = run_long(
            &home,
            &[
                "batch",
                file.to_str().unwrap(),
                "-o",
                out_file.to_str().unwrap(),
                "--parallel",
                "8",
                "--max-tokens",
                "200",
                "--json-schema",
                schema_file.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        results.extend(
            std::fs::read_to_string(&out_file)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(results.len(), 50);
    let mut distinct = std::collections::HashSet::new();
    for r in &results {
        let id = r["id"].as_str().unwrap();
        assert_eq!(
            r["finish_reason"], "stop",
            "{id} did not end by itself: {r}"
        );
        let text = r["text"].as_str().unwrap();
        assert_valid(&schema, text, id);
        distinct.insert(text.to_string());
    }
    // Sampling really sampled: the replies are not all one.
    assert!(distinct.len() > 10, "{distinct:?}");

    // A line whose schema is broken fails on its own, naming the field; the rest still run.
    let lines = [
        json!({"id": "good", "prompt": "Answer:", "grammar": "root ::= \"ok\"", "max_tokens": 8}),
        json!({"id": "bad", "prompt": "Answer:", "json_schema": {"type": 5}}),
        json!({"id": "both", "prompt": "Answer:", "json_schema": {}, "grammar": "root ::= \"x\""}),
        json!({"id": "gbnf", "prompt": "Answer:", "grammar": "root ::= [a-"}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let file = write(home.path(), "mixed.jsonl", &input);
    let out_file = home.path().join("mixed-out.jsonl");
    let out = home.run(&[
        "batch",
        file.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    let results: Vec<Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    assert!(!out.status.success(), "failed lines give a failing exit");
    assert_eq!(by_id("good")["text"], "ok");
    let bad = by_id("bad");
    assert_eq!(bad["error"]["param"], "json_schema", "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("/type"),
        "{bad}"
    );
    assert_eq!(by_id("both")["error"]["code"], "invalid_request");
    let gbnf = by_id("gbnf");
    assert_eq!(gbnf["error"]["code"], "invalid_request", "{gbnf}");
    assert!(
        gbnf["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid GBNF"),
        "{gbnf}"
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_response_format_in_openais_shapes() {
    let home = home();
    let server = Server::start(&home, &[]);
    let chat = format!("{}/chat/completions", server.api());
    let http = client();
    let ask = |extra: Value| {
        let mut body = json!({
            "model": "gemma3-270m",
            "messages": [{"role": "user", "content": "Describe a pet as JSON."}],
            "max_tokens": 200,
            "temperature": 0
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        http.post(&chat).json(&body).send()
    };
    let content = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let schema = pet_schema();
    let r = ask(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema, "strict": true}}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_valid(&schema, &content(&v), "json_schema");

    let r = ask(json!({"response_format": {"type": "json_object"}, "temperature": 0.8, "seed": 5}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    // Any object is unbounded, so a small model may still be inside a string at max_tokens;
    // a reply that ended by itself must be an object, one cut short must say so.
    let text = content(&v);
    match v["choices"][0]["finish_reason"].as_str().unwrap() {
        "stop" => {
            let object: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("json_object reply is not JSON ({e}): {v}"));
            assert!(object.is_object(), "{object}");
        }
        "length" => assert!(text.starts_with('{'), "{v}"),
        other => panic!("finish reason {other}: {v}"),
    }

    // Streamed, the pieces join into the same kind of reply.
    let r = ask(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema}}, "stream": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let mut joined = String::new();
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            joined.push_str(t);
        }
    }
    assert_valid(&schema, &joined, "streamed json_schema");

    let r = ask(json!({"response_format": {"type": "text"}, "max_tokens": 4}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // llama.cpp's server's `grammar` field, on the text endpoint too.
    let r = http
        .post(format!("{}/completions", server.api()))
        .json(&json!({"model": "gemma3-270m", "prompt": "Is the sky blue? Answer:", "grammar": "root ::= \" yes\" | \" no\"", "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!([" yes", " no"].contains(&text), "{v}");

    // Every mistake is a 400 naming the field, with a sentence, before any generation.
    for (extra, param, needle) in [
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format",
            "not supported",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format",
            "json_schema",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}}),
            "response_format",
            "not valid",
        ),
        (
            json!({"grammar": "answer ::= \"x\""}),
            "grammar",
            "root ::=",
        ),
        (json!({"grammar": 7}), "grammar", "string"),
        (
            json!({"grammar": "root ::= \"x\"", "response_format": {"type": "json_object"}}),
            "grammar",
            "both",
        ),
    ] {
        let r = ask(extra.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{extra}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{extra}: {message}");
    }
    // Found by the engine's GBNF parser: a 400 as well, and the server goes on serving.
    let r = ask(json!({"grammar": "root ::= [a-"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid GBNF"),
        "{v}"
    );
    let r = ask(json!({"max_tokens": 2})).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_generate_text_takes_a_schema() {
    let home = home();
    let cwd = tempfile::tempdir().unwrap();
    let server = McpServer::start(home.path(), cwd.path(), Era::Initialize, &[], &[]).await;
    let tools = server.client.list_all_tools().await.unwrap();
    let generate = tools.iter().find(|t| t.name == "generate_text").unwrap();
    let described = &generate.input_schema["properties"]["schema"];
    assert_eq!(described["type"], "object", "{described}");
    assert!(described["description"]
        .as_str()
        .unwrap()
        .contains("JSON Schema"));

    let schema = pet_schema();
    let out = server
        .ok(
            "generate_text",
            json!({"prompt": "Describe a pet as JSON:", "schema": schema, "max_tokens": 200, "temperature": 0}),
        )
        .await;
    assert_eq!(out["finish_reason"], "stop", "{out}");
    assert_valid(&schema, out["text"].as_str().unwrap(), "mcp");

    let why = server
        .tool_error(
            "generate_text",
            json!({"prompt": "Hi", "schema": {"type": "object", "required": "name"}}),
        )
        .await;
    assert!(
        why.contains("argument `schema`") && why.contains("/required"),
        "{why}"
    );
    server.close().await;
}
