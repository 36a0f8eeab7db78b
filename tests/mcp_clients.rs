//! `gemmactl mcp` with the clients people use: the official MCP Inspector's CLI (both eras, its
//! strict schema lint, a real call), Claude Code's own CLI (`gemmactl mcp install claude-code`,
//! then `claude mcp list` connects), Claude Desktop's configuration file, and Streamable HTTP
//! with its Origin, Host and bearer-token rules. The npm clients are installed by
//! scripts/lib/mcp-clients.sh into the test cache, outside the repository.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mcp_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_support::{gemmactl_bin, npm_bin};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// The download cache the tests share (the Inspector starts servers with an empty environment).
fn cache_dir() -> PathBuf {
    let model = common::default_model();
    // …/models/<file>: the cache is two levels up.
    model.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A home with the default model registered.
fn home() -> common::Home {
    common::default_model();
    let home = common::Home::new();
    mcp_support::pull(home.path(), "gemma3-270m");
    home
}

fn inspector(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(npm_bin("mcp-inspector"));
    cmd.arg("--cli")
        .arg(gemmactl_bin())
        .arg("mcp")
        .args(["-e", &format!("GEMMACTL_HOME={}", home.display())])
        .args(["-e", &format!("GEMMACTL_CACHE={}", cache_dir().display())])
        .args(args);
    common::run_bounded(cmd)
}

#[test]
fn the_inspector_lints_the_tools_in_both_eras_and_calls_one() {
    let home = home();
    for era in [&[][..], &["--protocol-era", "modern"][..]] {
        let mut args = era.to_vec();
        args.extend(["--method", "tools/list", "--strict", "-q"]);
        let out = inspector(home.path(), &args);
        assert!(
            out.status.success(),
            "inspector {args:?} exited {:?}: {}{}",
            out.status.code(),
            common::stdout(&out),
            common::stderr(&out)
        );
        assert!(common::stdout(&out).contains("complete_code"));
    }
    let out = inspector(
        home.path(),
        &[
            "--protocol-era",
            "modern",
            "--format",
            "json",
            "-q",
            "--method",
            "tools/call",
            "--tool-name",
            "generate_text",
            "--tool-arg",
            "prompt=The capital of France is",
            "max_tokens=6",
            "temperature=0",
        ],
    );
    assert!(
        out.status.success(),
        "tools/call exited {:?}: {}{}",
        out.status.code(),
        common::stdout(&out),
        common::stderr(&out)
    );
    let v: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let result = &v["result"];
    let text = result["structuredContent"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!text.trim().is_empty(), "{v}");
    assert_eq!(result["isError"], false);
    // A tool error is the Inspector's exit 5 (an out-of-range argument: the Inspector itself
    // refuses an empty `prompt=` before calling).
    let out = inspector(
        home.path(),
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "generate_text",
            "--tool-arg",
            "prompt=Hi",
            "max_tokens=0",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", common::stdout(&out));
    assert!(
        common::stdout(&out).contains("`max_tokens` 0 is out of range"),
        "{}",
        common::stdout(&out)
    );
}

/// Claude Code's CLI with a throw-away HOME: offline, its `mcp add` and `mcp list` work.
fn claude(home: &Path, project: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(npm_bin("claude"));
    cmd.args(args)
        .current_dir(project)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    common::run_bounded(cmd)
}

#[test]
fn claude_code_connects_after_install_and_claude_desktop_gets_its_entry() {
    let gemma_home = home();
    let user_home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let claude_dir = npm_bin("claude").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        claude_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut install = gemma_home.cmd();
    install
        .args(["mcp", "install", "claude-code", "--scope", "local"])
        .current_dir(project.path())
        .env("HOME", user_home.path())
        .env("GEMMACTL_CACHE", cache_dir())
        .env("PATH", &path)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    let out = common::run_bounded(install);
    assert!(
        out.status.success(),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stderr(&out).contains("running: claude mcp add --scope local gemma -e"));

    let out = claude(user_home.path(), project.path(), &["mcp", "list"]);
    let listed = common::stdout(&out);
    assert!(out.status.success(), "{listed}{}", common::stderr(&out));
    let line = listed
        .lines()
        .find(|l| l.starts_with("gemma:"))
        .unwrap_or_else(|| panic!("gemma is not listed: {listed}"));
    assert!(line.contains("✔ Connected"), "{listed}");
    assert!(line.contains(gemmactl_bin().canonicalize().unwrap().to_str().unwrap()));
    let registered: Value = serde_json::from_str(
        &std::fs::read_to_string(user_home.path().join(".claude.json")).unwrap(),
    )
    .unwrap();
    let text = registered.to_string();
    assert!(
        text.contains(gemma_home.path().to_str().unwrap()),
        "GEMMACTL_HOME not passed: {text}"
    );

    // The printed form for a project, without running anything.
    let out = gemma_home.run(&[
        "mcp",
        "install",
        "claude-code",
        "--scope",
        "project",
        "--print",
    ]);
    assert!(out.status.success());
    assert!(
        common::stdout(&out).starts_with("claude mcp add --scope project gemma -e 'GEMMACTL_HOME=")
    );

    // Claude Desktop: merged into its configuration file, other servers kept.
    let file = user_home
        .path()
        .join(".config/Claude/claude_desktop_config.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        r#"{"mcpServers": {"other": {"command": "/bin/true"}}, "theme": "dark"}"#,
    )
    .unwrap();
    let mut desktop = gemma_home.cmd();
    desktop
        .args(["mcp", "install", "claude-desktop", "--model", "gemma3-270m"])
        .env("HOME", user_home.path())
        .env_remove("XDG_CONFIG_HOME");
    let out = common::run_bounded(desktop);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(config["theme"], "dark");
    assert_eq!(config["mcpServers"]["other"]["command"], "/bin/true");
    let gemma = &config["mcpServers"]["gemma"];
    assert_eq!(
        gemma["args"],
        serde_json::json!(["mcp", "--model", "gemma3-270m"])
    );
    assert!(Path::new(gemma["command"].as_str().unwrap()).is_absolute());
    assert!(gemma.get("type").is_none());
    assert_eq!(
        gemma["env"]["GEMMACTL_HOME"],
        gemma_home.path().to_str().unwrap()
    );
    // A broken file is not overwritten.
    std::fs::write(&file, "{ not json").unwrap();
    let mut desktop = gemma_home.cmd();
    desktop
        .args(["mcp", "install", "claude-desktop"])
        .env("HOME", user_home.path())
        .env_remove("XDG_CONFIG_HOME");
    let out = common::run_bounded(desktop);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("is not valid JSON"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ not json");
}

/// `gemmactl mcp --http ADDR` started on a free port; the address comes from its stderr.
struct HttpServer {
    child: tokio::process::Child,
    url: String,
}

impl HttpServer {
    async fn start(home: &Path, addr: &str, env: &[(&str, &str)]) -> HttpServer {
        let mut cmd = mcp_support::command(home);
        cmd.args(["mcp", "--http", addr])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("gemmactl mcp: serving MCP at ") {
                    return url.to_string();
                }
            }
            panic!("gemmactl mcp --http exited without serving");
        })
        .await
        .expect("the server said where it serves");
        // Keep draining stderr so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        HttpServer { child, url }
    }

    /// Stops the server as a service manager would (SIGTERM) and checks that it shuts down on
    /// its own, in time and with success (a SIGKILL would also lose its coverage profile).
    async fn stop(mut self) {
        let pid = self.child.id().expect("the server is still running") as i32;
        // SAFETY: signalling our own child by its pid; it has not been reaped (we own `child`).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("gemmactl mcp --http stops within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "stopped by SIGTERM: {status}");
    }
}

/// POSTs an `initialize` to `url` with extra headers; returns the status and the body.
async fn post_initialize(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"http-test","version":"1"}}}"#;
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = response.status().as_u16();
    // An SSE answer stays open after the result: read until the result is there.
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("\"result\"") {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            _ => break,
        }
    }
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_serves_local_clients_and_refuses_the_rest() {
    let home = home();
    let server = HttpServer::start(home.path(), "127.0.0.1:0", &[]).await;
    let url = server.url.clone();

    // A real client over HTTP: the Inspector lists the tools.
    let mut cmd = Command::new(npm_bin("mcp-inspector"));
    cmd.args([
        "--cli",
        &url,
        "--transport",
        "http",
        "--method",
        "tools/list",
        "-q",
    ]);
    let out = common::run_bounded(cmd);
    assert!(
        out.status.success(),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stdout(&out).contains("generate_text"));

    let (status, body) = post_initialize(&url, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"gemmactl\""), "{body}");
    let (status, _) = post_initialize(&url, &[("origin", "http://localhost:6274")]).await;
    assert_eq!(status, 200, "a local page is a local client");
    let (status, _) = post_initialize(&url, &[("origin", "https://evil.example")]).await;
    assert_eq!(status, 403, "a foreign web page must be refused");
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let (status, _) = post_initialize(&url, &[("host", &format!("evil.example:{port}"))]).await;
    assert_eq!(status, 403, "a rebinding host name must be refused");
    let (status, _) = post_initialize(&url.replace("/mcp", "/other"), &[]).await;
    assert_eq!(status, 404);
    server.stop().await;

    // Beyond loopback only with a token.
    let out = common::run_bounded({
        let mut cmd = home.cmd();
        cmd.args(["mcp", "--http", "0.0.0.0:0"])
            .env_remove("GEMMACTL_MCP_TOKEN");
        cmd
    });
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("GEMMACTL_MCP_TOKEN"),
        "{}",
        common::stderr(&out)
    );

    let secret = "test-secret-0123456789";
    let server = HttpServer::start(
        home.path(),
        "127.0.0.1:0",
        &[("GEMMACTL_MCP_TOKEN", secret)],
    )
    .await;
    let (status, _) = post_initialize(&server.url, &[]).await;
    assert_eq!(status, 401);
    let (status, _) =
        post_initialize(&server.url, &[("authorization", "Bearer wrong-secret")]).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {secret}");
    let (status, body) = post_initialize(&server.url, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}
