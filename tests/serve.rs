//! `gemmactl serve` end to end: the real binary, the real engine and model, real sockets on
//! loopback only. Security defaults, a disconnecting client, attached front ends and their
//! fallback, remote engines through a second server, and a bounded soak.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mcp_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::server::{children, fd_count, rss_kib, Server};
use mcp_support::{Era, Server as McpServer};
use serde_json::{json, Value};

/// A home with the default model registered, and `config` as its config.toml.
fn home(config: &str) -> common::Home {
    common::default_model();
    let home = common::Home::new();
    let out = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let dir = home.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();
    home
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("gemmactl-test")
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", common::stdout(out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn security_defaults_hold() {
    let home = home(
        "[serve]\nheader_timeout_secs = 2\nidle_timeout_secs = 3\nmax_body_bytes = 10000\nmax_prompt_chars = 100\n",
    );
    // Beyond loopback without a key: refused at start, with the fix.
    let out = home.run(&["serve", "--addr", "0.0.0.0:0", "--no-preload"]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("API key"),
        "{err}"
    );

    let key = "k".repeat(8) + "0123456789abcdef";
    let key_file = home.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let server = Server::start(
        &home,
        &["--no-preload", "--api-key-file", key_file.to_str().unwrap()],
    );
    let http = client();
    let models = format!("{}/models", server.api());
    let r = http.get(&models).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert_eq!(
        http.get(&models)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http.get(&models).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Health needs no key.
    assert_eq!(
        http.get(format!("{}/health", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // An oversized body, and an oversized prompt: 413, OpenAI-shaped.
    let chat = format!("{}/chat/completions", server.api());
    let big = json!({"model": "gemma3-270m", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    let r = http
        .post(&chat)
        .bearer_auth(&key)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes"),
        "{body}"
    );
    let long = json!({"model": "gemma3-270m", "prompt": "y".repeat(500)});
    let r = http
        .post(format!("{}/completions", server.api()))
        .bearer_auth(&key)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Not JSON: 400 with the reason.
    let r = http
        .post(&chat)
        .bearer_auth(&key)
        .body("{nope")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An unknown route: 404 in the same shape.
    let r = http
        .get(format!("{}/v2/nothing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    // CORS is off: a browser preflight gets no allow-origin.
    let r = http
        .request(reqwest::Method::OPTIONS, &chat)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Slow-loris: headers trickling in are cut off by the header timeout, and a connection that
    // sends nothing by the idle timeout.
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let slow = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(300));
                if s.write_all(b"a").is_err() {
                    return started.elapsed();
                }
            }
            panic!("a slow-loris connection was still open after 30 s");
        }
    });
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection got data instead of being closed");
    assert!(
        started.elapsed() < Duration::from_secs(29),
        "an idle connection was not closed"
    );
    slow.join().unwrap();
}

#[test]
fn the_openai_python_package_works_against_the_server() {
    let python = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/lib/openai-venv.sh"
        ))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/lib/openai-venv.sh");
    assert!(
        python.status.success(),
        "could not install the openai package (scripts/lib/openai-venv.sh)"
    );
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    // One decode slot and no queue: a second request while one streams is a 429.
    let home = home("[engine]\nparallel = 1\n[supervisor]\nqueue_length = 0\n");
    let server = Server::start(&home, &[]);
    server.wait_healthy();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/openai/client_check.py"
    ))
    .arg(server.api())
    .arg("gemma3-270m");
    let out = common::run_bounded(cmd);
    let said = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("all checks passed"), "{said}");
}

/// The first content piece of a streamed chat reply, then the response dropped: a client gone.
async fn stream_then_disconnect(http: &reqwest::Client, api: &str, max_tokens: u32) {
    let body = json!({"model": "gemma3-270m", "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}],
        "max_tokens": max_tokens, "temperature": 0, "stream": true});
    let mut r = http
        .post(format!("{api}/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(300), r.chunk())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream ended before any text"),
        ));
    }
    drop(r);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_frees_its_slot() {
    // One slot: if the dropped reply kept decoding, the next request would wait for 2000 tokens.
    let home = home("[engine]\nparallel = 1\n");
    let server = Server::start(&home, &["--log"]);
    server.wait_healthy();
    let http = client();
    stream_then_disconnect(&http, &server.api(), 2000).await;
    let r = http
        .post(format!("{}/completions", server.api()))
        .json(&json!({"model": "gemma3-270m", "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The dropped reply was cancelled, not finished: stored as such, far short of its limit.
    let list = json_of(&home.run(&["history", "list", "--json"]));
    let story = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"].as_str().unwrap().contains("dragon"))
        .expect("the story was stored");
    assert_eq!(story["origin"]["source"], "serve");
    assert_eq!(story["origin"]["client"], "gemmactl-test", "{story}");
    let shown = json_of(&home.run(&["history", "show", &story["id"].to_string(), "--json"]));
    let reply = shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(reply["finish_reason"], "cancelled", "{reply}");
}

#[test]
fn front_ends_attach_to_the_server_and_fall_back_when_it_is_gone() {
    let home = home("");
    let mut server = Server::start(&home, &[]);
    server.wait_healthy();
    // A second server for the same home is refused.
    let out = home.run(&["serve", "--addr", "127.0.0.1:0", "--no-preload"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("already runs for this home"),
        "{}",
        common::stderr(&out)
    );

    let run = [
        "run",
        "--max-tokens",
        "3",
        "--temperature",
        "0",
        "--json",
        "The capital of France is",
    ];
    let out = home.run(&run);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let attached = json_of(&out);
    assert_eq!(attached["usage"]["completion_tokens"], 3);
    // The server's engine served it: the only engine held is the server's, and it counted it.
    let ps = json_of(&home.run(&["ps", "--json"]));
    let holders = ps.as_array().unwrap();
    assert_eq!(holders.len(), 1, "{ps}");
    assert_eq!(holders[0]["pid"], server.pid());
    assert_eq!(holders[0]["command"], "gemmactl serve");
    assert_eq!(holders[0]["engines"][0]["requests_served"], 1, "{ps}");
    let engine_pid = holders[0]["engines"][0]["pid"].as_u64().unwrap();
    assert_eq!(attached["engine"]["name"], "gemma-engine");
    // Stored once, by the front end that owns it.
    let list = json_of(&home.run(&["history", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["origin"]["source"], "run");

    // The server dies without cleaning up: its record is stale, and run falls back.
    server.kill();
    let record = home.path().join("state/serve.json");
    assert!(record.exists(), "a killed server cannot remove its record");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{engine_pid}")).exists() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = home.run(&run);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        json_of(&out)["text"],
        attached["text"],
        "greedy: the same reply in-process"
    );
    assert!(!record.exists(), "the stale record was not removed");
    // --local never attaches, even with a live server.
    let server = Server::start(&home, &["--no-preload"]);
    let out = home.run(&[
        "run",
        "--local",
        "--max-tokens",
        "1",
        "--temperature",
        "0",
        "Hi",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let ps = json_of(&home.run(&["ps", "--json"]));
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .all(|p| p["engines"].as_array().unwrap().is_empty()),
        "the server loaded nothing for --local: {ps}"
    );
    drop(server);
}

/// Requests the server's engine has served; the server must be the only process holding
/// engines (an attached front end holds none).
fn served_by_the_server(home: &common::Home) -> u64 {
    let ps = json_of(&home.run(&["ps", "--json"]));
    let holders = ps.as_array().unwrap();
    assert_eq!(holders.len(), 1, "only the server holds engines: {ps}");
    assert_eq!(holders[0]["command"], "gemmactl serve", "{ps}");
    holders[0]["engines"][0]["requests_served"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_mcp_attach_to_the_server() {
    let home = home("");
    let server = Server::start(&home, &[]);
    server.wait_healthy();

    // batch: its lines are answered by the server's engine and stored by batch.
    let input = home.path().join("lines.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"One, two,\"}\n{\"id\": \"b\", \"prompt\": \"Red, green,\"}\n",
    )
    .unwrap();
    let out = home.run(&[
        "batch",
        input.to_str().unwrap(),
        "--max-tokens",
        "2",
        "--temperature",
        "0",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let results: Vec<Value> = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|r| r["error"].is_null()), "{results:?}");
    assert_eq!(served_by_the_server(&home), 2);

    // mcp: a tool call goes to the server's engine too, and the MCP server holds none.
    let cwd = tempfile::tempdir().unwrap();
    let mcp = McpServer::start(home.path(), cwd.path(), Era::Initialize, &[], &[]).await;
    let reply = mcp
        .ok(
            "generate_text",
            json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}),
        )
        .await;
    assert_eq!(reply["usage"]["completion_tokens"], 3, "{reply}");
    assert_eq!(served_by_the_server(&home), 3);
    mcp.close().await;

    // Stored once each, by the front end that owns the turn.
    let list = json_of(&home.run(&["history", "list", "--json"]));
    let mut sources: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["origin"]["source"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    assert_eq!(sources, ["batch", "batch", "mcp"], "{list}");
    drop(server);
}

#[test]
fn a_remote_engine_is_another_server_and_its_death_is_one_clear_error() {
    // Home B runs the model; home A knows it only as a remote model.
    let home_b = home("");
    let mut far = Server::start(&home_b, &[]);
    far.wait_healthy();
    let home_a = home("[serve]\nattach = false\n[engines.remote]\nretries = 0\n");
    let out = home_a.run(&[
        "models",
        "add",
        "far",
        "--remote",
        &far.api(),
        "--remote-model",
        "gemma3-270m",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let listed = json_of(&home_a.run(&["models", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "far" && m["engine"] == "remote"),
        "{listed}"
    );
    let doctor = json_of(&home_a.run(&["doctor", "--json"]));
    let remote = &doctor["remote_models"][0];
    assert_eq!(
        (remote["model"].as_str(), remote["reachable"].as_bool()),
        (Some("far"), Some(true)),
        "{remote}"
    );
    assert!(remote["served_models"]
        .as_array()
        .unwrap()
        .contains(&json!("gemma3-270m")));

    let out = home_a.run(&[
        "run",
        "--model",
        "far",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--json",
        "The capital of France is",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["engine"]["name"], "remote");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert!(!v["text"].as_str().unwrap().is_empty());
    // The shell, in a real terminal, through the remote engine.
    let mut cmd = std::process::Command::new(common::gemmactl_bin());
    cmd.args(["chat", "--model", "far"])
        .env("GEMMACTL_HOME", home_a.path())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env_remove("GEMMACTL_MODEL");
    let mut chat = expectrl::Session::spawn(cmd).unwrap();
    chat.set_expect_timeout(Some(Duration::from_secs(300)));
    if let Err(e) = chat.expect(">>> ") {
        let mut rest = String::new();
        let _ = chat.read_to_string(&mut rest);
        panic!("the shell did not start ({e}): {rest}");
    }
    chat.send_line("/set max_tokens 6").unwrap();
    chat.expect(">>> ").unwrap();
    chat.send_line("Hello").unwrap();
    chat.expect("tok/s").unwrap();
    chat.expect(">>> ").unwrap();
    chat.send_line("/show").unwrap();
    chat.expect(format!("remote server {}", far.api()).as_str())
        .unwrap();
    chat.expect(">>> ").unwrap();
    chat.send_line("/quit").unwrap();
    chat.expect(expectrl::Eof).unwrap();

    // The remote server dies mid-reply: a clear error naming its URL, and what was written kept.
    let mut child = home_a
        .cmd()
        .args([
            "run",
            "--model",
            "far",
            "--max-tokens",
            "2000",
            "--temperature",
            "0",
            "Tell me a long story about a dragon.",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    let n = stdout.read(&mut first).unwrap();
    assert!(n > 0, "no text before the kill");
    far.kill();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = common::run_bounded_wait(child);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains(&far.api()), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    let list = json_of(&home_a.run(&["history", "list", "--json"]));
    let story = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"].as_str().unwrap().contains("dragon"))
        .unwrap();
    let shown = json_of(&home_a.run(&["history", "show", &story["id"].to_string(), "--json"]));
    let reply = shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(reply["finish_reason"], "error", "{reply}");
    assert!(
        !reply["content"].as_str().unwrap().is_empty(),
        "the text written before the kill was lost: {reply}"
    );
}

/// One of the soak's requests; `true` when it was answered or failed cleanly.
async fn soak_request(http: &reqwest::Client, api: &str, i: usize) -> Result<(), String> {
    let stream = i % 4 == 1 || i % 4 == 2;
    let body = if i.is_multiple_of(2) {
        json!({"model": "gemma3-270m", "prompt": format!("Number {i} is"), "max_tokens": 2, "temperature": 0, "stream": stream})
    } else {
        json!({"model": "gemma3-270m", "messages": [{"role": "user", "content": format!("Say {i}.")}], "max_tokens": 2, "stream": stream, "stream_options": {"include_usage": true}})
    };
    let path = if i.is_multiple_of(2) {
        "completions"
    } else {
        "chat/completions"
    };
    let send = http.post(format!("{api}/{path}")).json(&body).send();
    if i % 4 == 3 {
        // Disconnected before the answer: the request is abandoned mid-way.
        let _ = tokio::time::timeout(Duration::from_millis(5), send).await;
        return Ok(());
    }
    let mut r = send.await.map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        200 => {}
        429 | 503 => return Ok(()),
        s => {
            return Err(format!(
                "status {s}: {}",
                r.text().await.unwrap_or_default()
            ))
        }
    }
    if i % 4 == 2 {
        // Cancelled: the first piece, then gone.
        let _ = r.chunk().await;
        return Ok(());
    }
    let text = r.text().await.map_err(|e| e.to_string())?;
    if stream && !text.contains("[DONE]") {
        return Err(format!("a stream ended without [DONE]: {text}"));
    }
    if !stream && !text.contains("\"usage\"") {
        return Err(format!("a reply without usage: {text}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_of_mixed_requests_leaks_nothing() {
    let total: usize = std::env::var("GEMMACTL_SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let warmup = (total / 10).max(1);
    let home = home("");
    let server = Server::start(&home, &[]);
    server.wait_healthy();
    let http = client();
    let api = server.api();
    let run = |from: usize, to: usize| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let mut failures = Vec::new();
            let mut next = from;
            // Four clients at a time.
            while next < to {
                let batch: Vec<_> = (next..(next + 4).min(to))
                    .map(|i| {
                        let http = http.clone();
                        let api = api.clone();
                        tokio::spawn(async move { soak_request(&http, &api, i).await })
                    })
                    .collect();
                for b in batch {
                    if let Err(e) = b.await.unwrap() {
                        failures.push(e);
                    }
                }
                next += 4;
            }
            failures
        }
    };
    let failures = run(0, warmup).await;
    assert!(failures.is_empty(), "{failures:?}");
    // Let abandoned requests finish before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, fds) = (rss_kib(server.pid()), fd_count(server.pid()));
    let failures = run(warmup, total).await;
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_end, fds_end) = (rss_kib(server.pid()), fd_count(server.pid()));
    assert!(
        rss_end as f64 <= rss as f64 * 1.10,
        "server RSS grew from {rss} KiB to {rss_end} KiB"
    );
    assert!(
        fds_end <= fds + 4,
        "file descriptors went from {fds} to {fds_end}"
    );
    assert_eq!(
        children(server.pid()).len(),
        1,
        "one engine process, no leaked ones"
    );
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gemmactl_engine_state{model=\"gemma3-270m\",state=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gemmactl_http_requests_total"),
        "{metrics}"
    );
}

/// OpenAI content parts with images: a data URL goes through the turn service to the real
/// engine, which cannot see (a 400 naming the model); a bad data URL is a 400 naming the
/// image; a local path is refused unless the server was started with --allow-local-images.
#[tokio::test(flavor = "multi_thread")]
async fn image_parts_over_http_data_urls_only_unless_local_files_are_allowed() {
    use base64::Engine as _;
    let home = home("");
    let pic = home.path().join("pic.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([7, 8, 9]))
        .save_with_format(&pic, image::ImageFormat::Png)
        .unwrap();
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&pic).unwrap())
    );
    let ask = |image_url: &str| {
        json!({"model": "gemma3-270m", "max_tokens": 3, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": "What is it?"},
        ]}]})
    };
    let http = client();
    let mut server = Server::start(&home, &["--no-preload"]);
    let chat = format!("{}/chat/completions", server.api());
    let error = |body: Value| body["error"]["message"].as_str().unwrap_or("").to_string();

    let r = http.post(&chat).json(&ask(&url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_cannot_see_images", "{body}");
    assert_eq!(
        error(body),
        "gemma3-270m cannot see images: register a vision model with --mmproj, see README"
    );

    let r = http
        .post(&chat)
        .json(&ask("data:image/png;base64,bm90IGFuIGltYWdl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let message = error(r.json().await.unwrap());
    assert!(
        message.starts_with("image 1 of messages[0] is not an image"),
        "{message}"
    );

    let r = http
        .post(&chat)
        .json(&ask(pic.to_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let message = error(r.json().await.unwrap());
    assert!(
        message.contains("does not read for its clients")
            && message.contains("--allow-local-images"),
        "{message}"
    );
    server.stop();

    // Allowed: the file is read (and, like any image, refused by a model that cannot see).
    let server = Server::start(&home, &["--no-preload", "--allow-local-images"]);
    let chat = format!("{}/chat/completions", server.api());
    let r = http
        .post(&chat)
        .json(&ask(pic.to_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_cannot_see_images", "{body}");
}
