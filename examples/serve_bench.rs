//! Time to first token through `gemmactl serve`'s HTTP streaming against the same request
//! in-process, like for like:
//!
//! - A: `POST /v1/chat/completions` with `"stream": true` to a warm `gemmactl serve` (a child
//!   process on a loopback port), timed from the request sent to the first server-sent event
//!   whose `choices[0].delta.content` is not empty — what an OpenAI client sees;
//! - B: the same conversation sent through a turn service in this process (its own supervisor
//!   and engine, its own history file), timed from `Thread::send` to the first `Token` event —
//!   what `gemmactl chat` sees.
//!
//! Both send the same one-message chat (a different question each round, the same for A and B
//! within a round), greedy, 8 tokens at most, and both store the turn as the server does. Rounds
//! alternate which way goes first, so drift in the machine's speed falls on both; the first
//! round of each warms its engine and is not counted. The difference is reported per round and
//! as the median of those paired differences.
//!
//! ```sh
//! cargo run --example serve_bench -- --runs 30 [--pause-ms 1000]
//! ```
//! Needs the default model in the download cache (`gemmactl models pull gemma3-270m`) and
//! `cargo build --workspace` (gemmactl and the engine next to this example's folder).

// A benchmark stops with its reason on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use gemmactl::chat::TurnService;
use gemmactl::config::{Config, Paths};
use gemmactl::domain::Source;
use gemmactl::models;
use gemmactl::store::Store;
use gemmactl::supervisor::Supervisor;
use serde_json::{json, Value};

mod common;
use common::{greedy_thread, median, ms, option, profile_dir, timed_turn};

const MAX_TOKENS: u32 = 8;

/// A `gemmactl serve` child on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(home: &Path) -> Server {
        let mut child = Command::new(profile_dir().join("gemmactl"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("GEMMACTL_HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gemmactl serve");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut url = None;
        for line in stderr.lines() {
            let line = line.expect("the server's stderr");
            if let Some(rest) = line.strip_prefix("gemmactl serve listening on ") {
                url = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        Server {
            child,
            url: url.expect("gemmactl serve said where it listens"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A: the streaming chat request; milliseconds to the first text.
async fn over_http(client: &reqwest::Client, url: &str, question: &str) -> f64 {
    let body = json!({
        "model": "gemma3-270m",
        "messages": [{ "role": "user", "content": question }],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": true,
    });
    let sent = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("the request");
    assert!(response.status().is_success(), "{}", response.status());
    let mut events = response.bytes_stream().eventsource();
    let mut first = None;
    while let Some(event) = events.next().await {
        let event = event.expect("a server-sent event");
        if event.data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).expect("a JSON chunk");
        let text = chunk["choices"][0]["delta"]["content"].as_str();
        if first.is_none() && text.is_some_and(|t| !t.is_empty()) {
            first = Some(ms(sent.elapsed()));
        }
    }
    first.expect("the reply had text")
}

/// B: the same conversation through the turn service; milliseconds to the first text.
async fn in_process(service: &TurnService, model: &models::ModelEntry, question: &str) -> f64 {
    let mut thread = greedy_thread(service, model, MAX_TOKENS);
    timed_turn(&mut thread, question).await.0
}

fn main() {
    common::run_in_throwaway_home(|home| async move { bench(&home).await });
}

async fn bench(home: &Path) {
    let runs = option("runs", 20) as usize;
    let pause = std::time::Duration::from_millis(option("pause-ms", 1000));
    let settle = || tokio::time::sleep(pause);
    let paths = Paths::discover().unwrap();
    let config = Config::load(&paths).unwrap();
    let model = models::resolve(&paths, &config.default_model)
        .expect("the default model is in the download cache (gemmactl models pull gemma3-270m)");
    let server = Server::start(home);
    let client = reqwest::Client::new();
    let store = Store::open(&home.join("in-process.db")).unwrap();
    let service = TurnService::new(
        Supervisor::unpublished(config.clone()),
        Some(store),
        Source::Chat,
        &paths,
        &config,
    );

    println!(
        "time to first token, {} model, one-message chat, greedy, {MAX_TOKENS} tokens at most, {} ms pause before each",
        model.name,
        pause.as_millis()
    );
    println!("round  first  http_ms  in_process_ms  difference_ms");
    let (mut http, mut local, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 loads and warms both engines.
    for round in 0..=runs {
        let question = format!("Question {round}: what is the capital of France?");
        // Each measurement starts after a pause (`--pause-ms`): an engine's threads may still
        // be spinning after its last step, and on a 2-core machine that would slow whichever
        // engine goes next. But this VM also runs slower for a while after it sat idle (a
        // request's first milliseconds take ~10× longer after a second of idle), and the HTTP
        // side wakes two processes, not one: a pause of 0 measures both warm.
        let (a, b) = if round % 2 == 0 {
            settle().await;
            let a = over_http(&client, &server.url, &question).await;
            settle().await;
            (a, in_process(&service, &model, &question).await)
        } else {
            settle().await;
            let b = in_process(&service, &model, &question).await;
            settle().await;
            (over_http(&client, &server.url, &question).await, b)
        };
        if round == 0 {
            continue;
        }
        let first = if round % 2 == 0 { "http" } else { "local" };
        println!("{round:5}  {first:5}  {a:7.1}  {b:13.1}  {:13.1}", a - b);
        http.push(a);
        local.push(b);
        diffs.push(a - b);
    }
    service.shutdown().await;
    drop(server);

    println!();
    println!("| time to first token (median of {runs}) | measured |");
    println!("|---|---|");
    println!(
        "| HTTP streaming (`gemmactl serve`) | {:.1} ms |",
        median(&http)
    );
    println!("| in-process (turn service) | {:.1} ms |", median(&local));
    println!(
        "| HTTP − in-process, paired by round | {:+.1} ms |",
        median(&diffs)
    );
}
