//! `gemmactl mcp` end to end: the real binary on the real default model, driven by rmcp's own
//! client (a dev-dependency) in both protocol eras.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mcp_support;

use std::time::{Duration, Instant};

use mcp_support::{await_result, gemmactl_json, text_of, Era, Server, CLIENT_NAME};
use serde_json::{json, Value};

/// A home with the default model registered, and an empty working folder for the server.
fn setup() -> (common::Home, tempfile::TempDir) {
    common::default_model();
    let home = common::Home::new();
    mcp_support::pull(home.path(), "gemma3-270m");
    (home, tempfile::tempdir().unwrap())
}

fn greedy(prompt: &str, max_tokens: u32) -> Value {
    json!({ "prompt": prompt, "max_tokens": max_tokens, "temperature": 0 })
}

const TOOLS: [&str; 5] = [
    "analyze_image",
    "chat",
    "complete_code",
    "generate_text",
    "list_models",
];

async fn assert_tools(server: &Server) {
    let tools = server.client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} has no real description",
            tool.name
        );
        assert!(
            tool.output_schema.is_some(),
            "{} has no outputSchema",
            tool.name
        );
    }
    let generate = tools.iter().find(|t| t.name == "generate_text").unwrap();
    let props = &generate.input_schema["properties"];
    assert_eq!(props["max_tokens"]["default"], 512);
    assert!(props["prompt"]["description"].as_str().unwrap().len() > 20);
}

/// Every tool in both eras on one home: structured results, conversations that continue
/// across calls (and across eras), every call in the history tagged with the client, and
/// nothing but JSON-RPC on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_in_both_eras_lands_in_the_history() {
    let (home, cwd) = setup();
    let server = Server::start(home.path(), cwd.path(), Era::Initialize, &[], &[]).await;
    assert_tools(&server).await;

    let out = server
        .ok("generate_text", greedy("The capital of France is", 8))
        .await;
    let text = out["text"].as_str().unwrap();
    assert!(text.contains("Paris") || text.contains("France"), "{out}");
    assert_eq!(out["model"], "gemma3-270m");
    assert_eq!(out["engine"], "gemma-engine");
    assert_eq!(out["backend"], "CPU");
    assert!(out["usage"]["completion_tokens"].as_u64().unwrap() <= 8);
    assert!(["stop", "length"].contains(&out["finish_reason"].as_str().unwrap()));

    let first = server
        .ok(
            "chat",
            json!({ "message": "My name is Ada.", "max_tokens": 12 }),
        )
        .await;
    let id = first["conversation_id"].as_i64().unwrap();
    assert!(id > 0, "{first}");
    let second = server
        .ok(
            "chat",
            json!({ "message": "What is my name?", "conversation_id": id, "max_tokens": 12 }),
        )
        .await;
    assert_eq!(second["conversation_id"], id);

    let models = server.ok("list_models", json!({})).await;
    let gemma = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "gemma3-270m")
        .unwrap()
        .clone();
    assert_eq!(gemma["state"], "idle", "{gemma}");
    assert_eq!(gemma["kind"], "base");
    assert_eq!(gemma["vision"], false);
    assert_eq!(gemma["backend"], "CPU");
    assert_eq!(gemma["context_length"], 8192);

    // Without fill-in-the-middle tokens, the prefix is continued and cut at the block's end.
    let code = server
        .ok(
            "complete_code",
            json!({ "prefix": "def add(a, b):\n    ", "max_tokens": 48 }),
        )
        .await;
    assert_eq!(code["method"], "completion");
    let code_text = code["code"].as_str().unwrap();
    assert!(!code_text.contains("\ndef "), "{code}");
    assert!(!code_text.contains("```"), "{code}");

    server.assert_stdout_is_protocol();
    let status = server.close().await;
    assert!(status.success(), "{status:?}");

    // The modern era, on the same home: the conversation goes on.
    let server = Server::start(home.path(), cwd.path(), Era::Discover, &[], &[]).await;
    assert_tools(&server).await;
    let out = server
        .ok("generate_text", greedy("The capital of France is", 8))
        .await;
    assert_eq!(out["text"], text, "greedy output differs between eras");
    let third = server
        .ok(
            "chat",
            json!({ "message": "And again?", "conversation_id": id, "max_tokens": 8 }),
        )
        .await;
    assert_eq!(third["conversation_id"], id);
    server.assert_stdout_is_protocol();
    assert!(server.close().await.success());

    // The history: one conversation of three exchanges, each turn reading the ones before it,
    // tagged with the front end and the client.
    let shown = gemmactl_json(home.path(), &["history", "show", &id.to_string(), "--json"]);
    let origin = &shown["conversation"]["origin"];
    assert_eq!(origin["source"], "mcp", "{shown}");
    assert_eq!(origin["client"], CLIENT_NAME);
    let messages = shown["messages"].as_array().unwrap();
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["My name is Ada.", "What is my name?", "And again?"]);
    let prompt_tokens: Vec<u64> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["usage"]["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(prompt_tokens.len(), 3, "{shown}");
    assert!(
        prompt_tokens.windows(2).all(|w| w[1] > w[0] + 4),
        "later turns do not read the earlier ones: {prompt_tokens:?}"
    );
    let list = gemmactl_json(home.path(), &["history", "list", "--json"]);
    let rows = list.as_array().unwrap();
    // generate_text twice, the chat, complete_code.
    assert_eq!(rows.len(), 4, "{list}");
    assert!(
        rows.iter().all(|r| r["origin"]["source"] == "mcp"),
        "{list}"
    );
}

/// Progress while the model loads and while it writes; a cancel that frees the engine's slot
/// at once; and nothing more for the cancelled call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_during_load_and_generation_and_cancel_frees_the_engine() {
    let (home, cwd) = setup();
    // One decode slot: a request the cancel did not free would hold up the next call.
    let env = [("GEMMACTL_PARALLEL", "1")];
    let server = Server::start(home.path(), cwd.path(), Era::Initialize, &[], &env).await;

    let handle = server
        .send("generate_text", greedy("Once upon a time", 200))
        .await;
    let token = handle.progress_token.0.to_string();
    let out = await_result(handle).await.unwrap();
    let out = out.structured_content.unwrap();
    let text = out["text"].as_str().unwrap();
    let progress = server.progress_of(&token);
    assert!(progress.len() >= 5, "{progress:?}");
    assert!(
        progress.windows(2).all(|w| w[1].progress > w[0].progress),
        "progress must grow: {progress:?}"
    );
    assert!(progress.iter().all(|p| p.total == Some(200.0)));
    // The cold start is reported as loading before any text.
    let loading = &progress[0];
    assert!(loading.progress < 1.0, "{loading:?}");
    assert!(
        progress.iter().any(|p| p
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("loading model gemma3-270m"))),
        "{progress:?}"
    );
    // The text notifications, joined, are the text of the result.
    let streamed: String = progress
        .iter()
        .filter(|p| p.progress >= 1.0)
        .filter_map(|p| p.message.clone())
        .collect();
    assert_eq!(streamed, text);
    let tokens = out["usage"]["completion_tokens"].as_u64().unwrap() as f64;
    assert!(progress.last().unwrap().progress >= tokens.min(200.0) - 1.0);

    // Cancel mid-generation.
    let handle = server
        .send("generate_text", greedy("Once upon a time", 4000))
        .await;
    let token = handle.progress_token.0.to_string();
    let request_id = handle.id.clone();
    let started = Instant::now();
    while !server.progress_of(&token).iter().any(|p| p.progress >= 3.0) {
        assert!(started.elapsed() < Duration::from_secs(120), "no text came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.cancel(Some("test".into())).await.unwrap();

    // The slot is free: `ps` (the supervisor's published status) shows nothing active.
    let waited = Instant::now();
    let freed = loop {
        let ps = gemmactl_json(home.path(), &["ps", "--json"]);
        let engines = ps[0]["engines"].as_array().cloned().unwrap_or_default();
        if !engines.is_empty() && engines.iter().all(|e| e["active"] == 0) {
            break Instant::now();
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the slot stayed busy: {ps}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A following call is served by the one slot.
    let next = server.ok("generate_text", greedy("Hello", 3)).await;
    assert!(next["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    // Nothing more about the cancelled call: no progress once it was stopped, no response.
    let late: Vec<_> = server
        .progress_of(&token)
        .into_iter()
        .filter(|p| p.at > freed)
        .collect();
    assert!(
        late.is_empty(),
        "progress kept coming after the cancel: {late:?}"
    );
    let id_json = serde_json::to_value(&request_id).unwrap();
    let answered = server.lines.lock().unwrap().iter().any(|(_, line)| {
        let v: Value = serde_json::from_str(line).unwrap();
        v["id"] == id_json && (v.get("result").is_some() || v.get("error").is_some())
    });
    assert!(!answered, "the cancelled call was answered");

    // The cancelled reply is in the history as cancelled, with what was written.
    let list = gemmactl_json(home.path(), &["history", "list", "--json"]);
    let cancelled_conv = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .map(|id| gemmactl_json(home.path(), &["history", "show", &id.to_string(), "--json"]))
        .find(|c| {
            c["messages"][0]["content"] == "Once upon a time"
                && c["messages"][1]["finish_reason"] == "cancelled"
        });
    assert!(cancelled_conv.is_some(), "no cancelled reply in {list}");
    server.assert_stdout_is_protocol();
    assert!(server.close().await.success());
}

/// 32 calls at once on one engine: each answered with its own text; and a queue bound that
/// answers overflow with a tool error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_batched_and_overflow_is_a_tool_error() {
    let (home, cwd) = setup();
    let server = Server::start(home.path(), cwd.path(), Era::Discover, &[], &[]).await;
    const WORDS: [&str; 32] = [
        "apple", "river", "candle", "window", "tiger", "garden", "silver", "rocket", "pencil",
        "forest", "bottle", "castle", "dragon", "mirror", "planet", "hammer", "orange", "butter",
        "jacket", "pillow", "monkey", "carpet", "violin", "anchor", "basket", "cookie", "desert",
        "engine", "guitar", "helmet", "island", "ladder",
    ];
    // Every word is one the model repeats when greedy ("falcon" was not: its continuation is
    // a near-tie with `<start_of_image>`, which batching flips either way).
    let mut handles = Vec::new();
    for w in WORDS {
        let prompt = format!("{w} {w} {w} {w} {w} {w} {w} {w}");
        handles.push((w, server.send("generate_text", greedy(&prompt, 6)).await));
    }
    for (word, handle) in handles {
        let result = await_result(handle).await.unwrap();
        assert_ne!(result.is_error, Some(true), "{word}: {}", text_of(&result));
        let text = result.structured_content.unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(word), "{word}: {text:?}");
        for other in WORDS.iter().filter(|o| **o != word) {
            assert!(!text.contains(other), "{word} got {other}'s text: {text:?}");
        }
    }
    assert!(server.close().await.success());

    // One slot and room for one waiting call: a third call at once is refused, not queued.
    let env = [("GEMMACTL_PARALLEL", "1"), ("GEMMACTL_QUEUE_LENGTH", "1")];
    let server = Server::start(home.path(), cwd.path(), Era::Initialize, &[], &env).await;
    let running = server
        .send("generate_text", greedy("Once upon a time", 2000))
        .await;
    let token = running.progress_token.0.to_string();
    let started = Instant::now();
    while !server.progress_of(&token).iter().any(|p| p.progress >= 1.0) {
        assert!(started.elapsed() < Duration::from_secs(120), "no text came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = server
        .send("generate_text", greedy("Once upon a time", 2000))
        .await;
    // Sent is not yet queued: wait until the server says the second call waits for the slot.
    let token = waiting.progress_token.0.to_string();
    let started = Instant::now();
    while !server.progress_of(&token).iter().any(|p| {
        p.message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for a free decode slot"))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second call never said it waits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = server.tool_error("generate_text", greedy("Hello", 3)).await;
    assert!(refused.contains("requests waiting already"), "{refused}");
    assert!(refused.contains("queue_length"), "{refused}");
    running.cancel(None).await.unwrap();
    waiting.cancel(None).await.unwrap();
    // The server lives on.
    server.ok("generate_text", greedy("Hello", 2)).await;
    assert!(server.close().await.success());
}

/// Bad input: protocol errors for what is not a call, tool errors (one sentence) for bad
/// values, and the server serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_the_server_lives_on() {
    let (home, cwd) = setup();
    let shots = cwd.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    // A real PNG, and one cut short after its signature.
    image::RgbImage::from_pixel(6, 4, image::Rgb([200, 100, 50]))
        .save_with_format(shots.join("cat.png"), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(shots.join("cut.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.png"), shots.join("link.png")).unwrap();
    let server = Server::start(home.path(), cwd.path(), Era::Initialize, &[], &[]).await;

    // Not a tool: a JSON-RPC error.
    let err = server.call("summon_dragon", json!({})).await.unwrap_err();
    assert!(
        err.contains("summon_dragon") || err.to_lowercase().contains("not found"),
        "{err}"
    );

    // Wrong types and values: tool errors naming the argument.
    let e = server
        .tool_error(
            "generate_text",
            json!({ "prompt": "hi", "max_tokens": "many" }),
        )
        .await;
    assert!(e.contains("`max_tokens`"), "{e}");
    let e = server
        .tool_error("generate_text", json!({ "prompt": 42 }))
        .await;
    assert!(e.contains("`prompt`"), "{e}");
    let e = server
        .tool_error("generate_text", json!({ "prompt": "hi", "top_p": 1.5 }))
        .await;
    assert!(e.contains("`top_p`"), "{e}");
    let e = server
        .tool_error(
            "generate_text",
            json!({ "prompt": "hi", "model": "no-such-model" }),
        )
        .await;
    assert!(e.contains("unknown model 'no-such-model'"), "{e}");
    let e = server
        .tool_error("chat", json!({ "message": "hi", "conversation_id": 999 }))
        .await;
    assert!(e.contains("999"), "{e}");

    // Images: missing, outside the allowed folders (also through a symlink), and the model.
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_path": "shots/none.png", "prompt": "?" }),
        )
        .await;
    assert!(e.contains("does not exist"), "{e}");
    let secret = outside.path().join("secret.png");
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_path": secret.to_str().unwrap(), "prompt": "?" }),
        )
        .await;
    assert!(e.contains("outside the folders"), "{e}");
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_path": "shots/link.png", "prompt": "?" }),
        )
        .await;
    assert!(
        e.contains("outside the folders") && e.contains("leads to"),
        "{e}"
    );
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_path": "shots/cut.png", "prompt": "?" }),
        )
        .await;
    assert!(e.contains("cut.png is a damaged or cut-short image"), "{e}");
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_data": "data:image/png;base64,not base64!", "prompt": "?" }),
        )
        .await;
    assert!(
        e.starts_with("argument `image_data` is not valid base64"),
        "{e}"
    );
    let e = server
        .tool_error("analyze_image", json!({ "prompt": "?" }))
        .await;
    assert!(e.contains("no image given"), "{e}");
    // A real image, through the turn service to the real engine, which cannot see: the
    // sentence names the model and the fix, and the call is stored with its image.
    let e = server
        .tool_error(
            "analyze_image",
            json!({ "image_path": "shots/cat.png", "prompt": "What colour is it?", "max_tokens": 4 }),
        )
        .await;
    assert_eq!(
        e,
        "gemma3-270m cannot see images: register a vision model with --mmproj, see README"
    );

    // A 10 MB prompt: refused with its size, nothing stored.
    let huge = "word ".repeat(2 * 1024 * 1024);
    let e = server
        .tool_error("generate_text", json!({ "prompt": huge }))
        .await;
    assert!(e.contains("bytes") && e.contains("context"), "{e}");

    // Still serving.
    let out = server.ok("generate_text", greedy("Hello", 2)).await;
    assert!(!out["text"].as_str().unwrap().is_empty() || out["finish_reason"] == "stop");
    server.assert_stdout_is_protocol();
    assert!(server.close().await.success());
}

/// Fill in the middle on the Qwen2.5-Coder stand-in (its vocabulary has the tokens): the
/// completion of a small Python function, between a prefix and a suffix, compiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_code_fills_in_the_middle_with_a_code_model() {
    let (home, cwd) = setup();
    mcp_support::pull(home.path(), "qwen2.5-coder-0.5b");
    let server = Server::start(
        home.path(),
        cwd.path(),
        Era::Discover,
        &["--model", "qwen2.5-coder-0.5b"],
        &[],
    )
    .await;
    let prefix =
        "def average(values):\n    \"\"\"The mean of a non-empty list of numbers.\"\"\"\n    ";
    let suffix = "\n\n\nprint(average([1, 2, 3]))\n";
    let out = server
        .ok(
            "complete_code",
            json!({ "prefix": prefix, "suffix": suffix, "language": "python", "max_tokens": 64 }),
        )
        .await;
    assert_eq!(out["method"], "fill_in_middle", "{out}");
    assert_eq!(out["model"], "qwen2.5-coder-0.5b");
    let code = out["code"].as_str().unwrap();
    assert!(!code.trim().is_empty(), "{out}");
    assert!(!code.contains("```"), "{out}");
    let program = format!("{prefix}{code}{suffix}");
    let compiled = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; compile(sys.stdin.read(), 'completion.py', 'exec')",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(program.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        compiled.status.success(),
        "the completion does not compile:\n{program}\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    assert!(server.close().await.success());
}
