//! A harness for the `gemmactl mcp` tests: the real binary as a child process, driven by rmcp's
//! own client in either protocol era, with every line the server writes on stdout recorded (so a
//! test can check that nothing but JSON-RPC goes there) and every progress notification kept.
#![allow(dead_code, unreachable_pub)]
// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    Implementation, JsonObject, ProgressNotificationParam, ProtocolVersion, Request, ServerResult,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RequestHandle,
    RunningService,
};
use rmcp::{ClientHandler, RoleClient};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest one tool call may take in a test: a hang fails the test instead of stalling CI.
pub const CALL_WAIT: Duration = Duration::from_secs(180);
/// The name the test client gives in `clientInfo`, which the history stores.
pub const CLIENT_NAME: &str = "gemmactl-tests";

/// The two protocol eras a server must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25: the `initialize` handshake.
    Initialize,
    /// 2026-07-28: stateless, `server/discover`, metadata on every request.
    Discover,
}

/// One progress notification as received.
#[derive(Debug, Clone)]
pub struct Progress {
    pub at: Instant,
    pub token: String,
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// The client side: remembers progress notifications.
#[derive(Clone, Default)]
pub struct Recorder {
    pub progress: Arc<Mutex<Vec<Progress>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(Progress {
            at: Instant::now(),
            token: params.progress_token.0.to_string(),
            progress: params.progress,
            total: params.total,
            message: params.message,
        });
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(CLIENT_NAME, "1.0.0"),
        )
    }
}

/// A running `gemmactl mcp` with a connected client.
pub struct Server {
    pub client: RunningService<RoleClient, Recorder>,
    pub recorder: Recorder,
    /// Every line the server wrote on stdout, with when it came.
    pub lines: Arc<Mutex<Vec<(Instant, String)>>>,
    pub stderr: Arc<Mutex<String>>,
    pub child: tokio::process::Child,
}

/// The `gemmactl` binary cargo built for these tests.
pub fn gemmactl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemmactl"))
}

/// A `gemmactl` command on `home` with the variables tests must not inherit removed.
pub fn command(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(gemmactl_bin());
    cmd.env("GEMMACTL_HOME", home)
        .env_remove("GEMMACTL_ENGINE")
        .env_remove("GEMMACTL_MODEL")
        .env_remove("GEMMACTL_CONTEXT")
        .env_remove("GEMMACTL_PARALLEL")
        .env_remove("GEMMACTL_QUEUE_LENGTH")
        .env_remove("GEMMACTL_MCP_TOKEN")
        .env("NO_COLOR", "1");
    cmd
}

impl Server {
    /// Starts `gemmactl mcp ARGS` on `home` (in folder `cwd`) with `env`, and connects in `era`.
    pub async fn start(
        home: &Path,
        cwd: &Path,
        era: Era,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = command(home);
        cmd.arg("mcp")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn gemmactl mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The client reads the server's stdout through a tee that keeps every line.
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (mut to_client, from_tee) = tokio::io::duplex(1 << 20);
        let kept = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                kept.lock().unwrap().push((Instant::now(), line.clone()));
                if to_client.write_all(line.as_bytes()).await.is_err()
                    || to_client.write_all(b"\n").await.is_err()
                {
                    break;
                }
            }
        });
        let recorder = Recorder::default();
        let lifecycle = match era {
            Era::Initialize => ClientLifecycleMode::Initialize,
            Era::Discover => ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        };
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            recorder
                .clone()
                .serve_with_lifecycle((from_tee, stdin), lifecycle),
        )
        .await
        .expect("the server answered the handshake in time")
        .unwrap_or_else(|e| {
            panic!(
                "{era:?} handshake failed: {e}; stderr: {}",
                stderr.lock().unwrap()
            )
        });
        Server {
            client,
            recorder,
            lines,
            stderr,
            child,
        }
    }

    /// Sends a `tools/call` (with a progress token, as rmcp's client always does).
    pub async fn send(&self, tool: &str, args: Value) -> RequestHandle<RoleClient> {
        let Value::Object(arguments) = args else {
            panic!("tool arguments must be an object")
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        self.client
            .peer()
            .send_cancellable_request(
                ClientRequest::CallToolRequest(Request::new(params)),
                PeerRequestOptions::no_options(),
            )
            .await
            .expect("send tools/call")
    }

    /// Calls a tool and waits (bounded) for its result; a JSON-RPC error is returned as `Err`.
    pub async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, String> {
        let handle = self.send(tool, args).await;
        await_result(handle).await
    }

    /// Calls a tool that must succeed, returning its structured content.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let result = self
            .call(tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool} failed: {e}; stderr: {}", self.stderr()));
        assert_ne!(
            result.is_error,
            Some(true),
            "{tool} returned a tool error: {:?}",
            result.content
        );
        result
            .structured_content
            .unwrap_or_else(|| panic!("{tool} has no structured content"))
    }

    /// Calls a tool that must fail as a tool (`isError: true`), returning its sentence.
    pub async fn tool_error(&self, tool: &str, args: Value) -> String {
        let result = self
            .call(tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool} gave a protocol error, not a tool error: {e}"));
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} did not fail: {result:?}"
        );
        text_of(&result)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Progress notifications received for `token`.
    pub fn progress_of(&self, token: &str) -> Vec<Progress> {
        self.recorder
            .progress
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.token == token)
            .cloned()
            .collect()
    }

    /// Checks that every line on stdout was a JSON-RPC 2.0 message.
    pub fn assert_stdout_is_protocol(&self) {
        let lines = self.lines.lock().unwrap();
        assert!(!lines.is_empty(), "the server wrote nothing");
        for (_, line) in lines.iter() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {line:?}"));
            assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {line}");
        }
    }

    /// Closes stdin and waits (bounded) for the server to exit on its own.
    pub async fn close(self) -> std::process::ExitStatus {
        let Server {
            client,
            stderr,
            mut child,
            ..
        } = self;
        let _ = client.cancel().await;
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "gemmactl mcp did not exit within 30 s of stdin closing; stderr: {}",
                stderr.lock().unwrap()
            ),
        }
    }
}

/// Waits (bounded) for a call's result.
pub async fn await_result(handle: RequestHandle<RoleClient>) -> Result<CallToolResult, String> {
    match tokio::time::timeout(CALL_WAIT, handle.await_response()).await {
        Err(_) => panic!("a tool call did not finish within {CALL_WAIT:?}"),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(ServerResult::CallToolResult(r))) => Ok(r),
        Ok(Ok(other)) => panic!("unexpected answer to tools/call: {other:?}"),
    }
}

/// The text blocks of a result, joined.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `arguments` as a JSON object.
pub fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// Runs `gemmactl ARGS` on `home` and returns its stdout as JSON.
pub fn gemmactl_json(home: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(gemmactl_bin())
        .env("GEMMACTL_HOME", home)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run gemmactl");
    assert!(
        out.status.success(),
        "gemmactl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gemmactl {args:?} did not print JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A home with a catalogue model registered (pulled into the shared cache once).
pub fn pull(home: &Path, model: &str) {
    let out = std::process::Command::new(gemmactl_bin())
        .env("GEMMACTL_HOME", home)
        .env("NO_COLOR", "1")
        .args(["models", "pull", model])
        .output()
        .expect("run gemmactl models pull");
    assert!(
        out.status.success(),
        "could not pull {model}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the test script installs the npm clients (scripts/lib/mcp-clients.sh).
pub fn npm_bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("GEMMACTL_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/gemmactl-test")
        });
    let bin = cache.join("mcp-clients/node_modules/.bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/lib/mcp-clients.sh (scripts/test.sh does) before these tests",
        bin.display()
    );
    bin
}
