//! What going through MCP costs and enables, measured on the real `gemmactl mcp` and the real
//! model with rmcp's own client (the dev-dependency the tests use):
//!
//! - a first call on a cold server: from `tools/call` sent to its first token (the model loads
//!   in between) and to its result;
//! - a warm call's latency through MCP against the same greedy request sent to a supervisor in
//!   this process (the baseline), rounds interleaved A/B so machine noise falls on both;
//! - aggregate tokens/s of 1, 8 and 32 concurrent calls (levels alternating over the rounds);
//! - cancel → engine slot free: from sending `notifications/cancelled` to the moment the
//!   server's published status (the file `gemmactl ps` reads) shows no request active.
//!
//! ```sh
//! cargo run --example mcp_bench -- --runs 5 --max-tokens 64
//! ```
//! Needs the default model in the download cache (`gemmactl models pull gemma3-270m`) and
//! `cargo build --workspace` (gemmactl and the engine next to this example's folder; the
//! in-process baseline uses that engine unless `GEMMACTL_ENGINE` says otherwise).

// A benchmark stops with its reason on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gemmactl::config::{Config, Paths};
use gemmactl::domain::GenerateRequest;
use gemmactl::models;
use gemmactl::supervisor::{Supervisor, SupervisorEvent};
use rmcp::model::{
    CallToolRequestParams, ClientRequest, ProgressNotificationParam, Request, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

mod common;
use common::{median, ms, option, profile_dir};

const PROMPT: &str = "Once upon a time";
const LEVELS: [usize; 3] = [1, 8, 32];

/// The client: remembers when each call's first text came.
#[derive(Clone, Default)]
struct Client {
    first_text: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl ClientHandler for Client {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if params.progress >= 1.0 {
            self.first_text
                .lock()
                .unwrap()
                .push((params.progress_token.0.to_string(), Instant::now()));
        }
    }
}

/// The gemmactl binary this example was built with; `GEMMACTL_BIN` overrides.
fn gemmactl_binary() -> PathBuf {
    std::env::var_os("GEMMACTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("gemmactl"))
}

struct Server {
    client: RunningService<RoleClient, Client>,
    recorder: Client,
    status_file: PathBuf,
}

impl Server {
    async fn start(home: &Path) -> Server {
        let mut cmd = tokio::process::Command::new(gemmactl_binary());
        cmd.arg("mcp").env("GEMMACTL_HOME", home);
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::null())
            .spawn()
            .expect("start gemmactl mcp");
        let pid = transport.id().expect("server pid");
        let recorder = Client::default();
        let client = recorder.clone().serve(transport).await.expect("handshake");
        Server {
            client,
            recorder,
            status_file: home.join("state/run").join(format!("{pid}.json")),
        }
    }

    /// Sends a greedy generate_text; returns the request handle.
    async fn send(
        &self,
        prompt: &str,
        max_tokens: u32,
    ) -> rmcp::service::RequestHandle<RoleClient> {
        let Value::Object(args) =
            json!({ "prompt": prompt, "max_tokens": max_tokens, "temperature": 0 })
        else {
            unreachable!()
        };
        self.client
            .peer()
            .send_cancellable_request(
                ClientRequest::CallToolRequest(Request::new(
                    CallToolRequestParams::new("generate_text").with_arguments(args),
                )),
                PeerRequestOptions::no_options(),
            )
            .await
            .expect("send")
    }

    /// Completion tokens of a finished call.
    async fn finish(handle: rmcp::service::RequestHandle<RoleClient>) -> u64 {
        match handle.await_response().await.expect("result") {
            ServerResult::CallToolResult(r) => {
                assert_ne!(r.is_error, Some(true), "{:?}", r.content);
                r.structured_content.unwrap()["usage"]["completion_tokens"]
                    .as_u64()
                    .unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    fn first_text_of(&self, token: &str) -> Option<Instant> {
        self.recorder
            .first_text
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, at)| *at)
    }

    /// Whether the published status shows no request on the engine.
    fn idle(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.status_file) else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return false;
        };
        v["engines"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["active"] == 0))
    }
}

fn main() {
    common::run_in_throwaway_home(|home| async move { bench(&home).await });
}

async fn bench(home: &Path) {
    let runs = option("runs", 5) as usize;
    let max_tokens = option("max-tokens", 64) as u32;
    let paths = Paths::discover().unwrap();
    let config = Config::load(&paths).unwrap();
    let model = models::resolve(&paths, &config.default_model)
        .expect("the default model is in the download cache (gemmactl models pull gemma3-270m)");

    // Cold: a new server each time; call sent → first token, and → result.
    let (mut cold_first, mut cold_total) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let server = Server::start(home).await;
        let sent = Instant::now();
        let handle = server.send(PROMPT, 8).await;
        let token = handle.progress_token.0.to_string();
        Server::finish(handle).await;
        cold_total.push(ms(sent.elapsed()));
        cold_first.push(ms(server.first_text_of(&token).unwrap() - sent));
        let _ = server.client.cancel().await;
    }

    // Warm: MCP against the supervisor in this process, interleaved, paired per round.
    let server = Server::start(home).await;
    let supervisor = Supervisor::unpublished(config.clone());
    let (mut mcp, mut direct, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // One of each first, so both engines are loaded and warm.
    for round in 0..=runs * 2 {
        let t = Instant::now();
        Server::finish(server.send(PROMPT, max_tokens).await).await;
        let a = ms(t.elapsed());
        let t = Instant::now();
        let request =
            GenerateRequest::greedy_completion(supervisor.new_request_id(), PROMPT, max_tokens);
        let mut reply = supervisor.submit(&model, request).unwrap();
        loop {
            match reply.next().await {
                Some(SupervisorEvent::Finished(_)) => break,
                Some(SupervisorEvent::Failed(e)) => panic!("{e}"),
                None => panic!("the reply ended without a finish"),
                _ => {}
            }
        }
        let b = ms(t.elapsed());
        if round > 0 {
            mcp.push(a);
            direct.push(b);
            ratios.push(a / b);
        }
    }
    supervisor.shutdown().await;

    // Aggregate tokens/s of concurrent calls, levels alternating.
    let mut per_level: Vec<Vec<f64>> = vec![Vec::new(); LEVELS.len()];
    for round in 0..runs {
        for i in 0..LEVELS.len() {
            let li = if round % 2 == 0 {
                i
            } else {
                LEVELS.len() - 1 - i
            };
            let n = LEVELS[li];
            let t = Instant::now();
            let mut handles = Vec::new();
            for k in 0..n {
                handles.push(server.send(&format!("{PROMPT} ({k})"), max_tokens).await);
            }
            let mut tokens = 0;
            for h in handles {
                tokens += Server::finish(h).await;
            }
            per_level[li].push(tokens as f64 / t.elapsed().as_secs_f64());
        }
    }

    // Cancel → the engine's slot free.
    let mut cancel = Vec::new();
    for _ in 0..runs {
        let handle = server.send(PROMPT, 4000).await;
        let token = handle.progress_token.0.to_string();
        while server.first_text_of(&token).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        handle.cancel(None).await.unwrap();
        while !server.idle() {
            tokio::time::sleep(Duration::from_micros(500)).await;
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the slot stayed busy"
            );
        }
        cancel.push(ms(t.elapsed()));
    }
    let _ = server.client.cancel().await;

    let one = median(&per_level[0]);
    println!(
        "gemmactl mcp benchmark: {} model, {runs} runs, {max_tokens}-token greedy replies",
        model.name
    );
    println!("| measure (median of {runs}) | measured |");
    println!("|---|---|");
    println!(
        "| cold server: call → first token (load included) | {:.0} ms |",
        median(&cold_first)
    );
    println!(
        "| cold server: call → result (8 tokens) | {:.0} ms |",
        median(&cold_total)
    );
    println!("| warm call through MCP | {:.1} ms |", median(&mcp));
    println!(
        "| same request, supervisor in-process | {:.1} ms |",
        median(&direct)
    );
    println!(
        "| MCP ÷ in-process, paired by round | {:.3} |",
        median(&ratios)
    );
    println!("| cancel → engine slot free | {:.1} ms |", median(&cancel));
    println!();
    println!(
        "| concurrent calls | {} |",
        LEVELS.map(|l| l.to_string()).join(" | ")
    );
    println!("|---|{}", "---|".repeat(LEVELS.len()));
    let agg: Vec<f64> = per_level.iter().map(|v| median(v)).collect();
    println!(
        "| aggregate tok/s | {} |",
        agg.iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "| × one call | {} |",
        agg.iter()
            .map(|v| format!("{:.2}", v / one))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}
