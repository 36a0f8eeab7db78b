//! A small harness for the end-to-end tests: real binaries, a throw-away `GEMMACTL_HOME` per
//! test, and the real default model from the shared download cache.
#![allow(dead_code)]
// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod engine;
pub(crate) mod projector;
pub(crate) mod server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a single gemmactl command may take in a test: a hang fails the test, not CI.
pub(crate) const DEADLINE: Duration = Duration::from_secs(300);

/// A fresh home with the default model pulled into it (from the shared download cache).
pub(crate) fn home_with_model() -> Home {
    default_model();
    let home = Home::new();
    let out = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    home
}

/// The `gemmactl` binary cargo built for these tests.
pub(crate) fn gemmactl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemmactl"))
}

/// `gemma-engine` sits next to `gemmactl` in the same target folder (`cargo build --workspace`).
pub(crate) fn engine_bin() -> PathBuf {
    let path = gemmactl_bin().with_file_name("gemma-engine");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (scripts/test.sh does) before the tests",
        path.display()
    );
    path
}

/// A temporary gemmactl home; dropped at the end of the test.
pub(crate) struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub(crate) fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `gemmactl` command that uses this home and the shared download cache.
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = Command::new(gemmactl_bin());
        cmd.env("GEMMACTL_HOME", self.path())
            .env_remove("GEMMACTL_ENGINE")
            .env_remove("GEMMACTL_MODEL")
            .env_remove("GEMMACTL_CONTEXT")
            .env_remove("GEMMACTL_PARALLEL")
            .env_remove("GEMMACTL_KV_CACHE_TYPE")
            .env_remove("GEMMACTL_FLASH_ATTENTION")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs gemmactl with no stdin, killing it if it outlives [`DEADLINE`].
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_bounded(cmd)
    }
}

/// The real Gemma 3 270M GGUF, pulled once into the shared cache (a no-op when it is there).
pub(crate) fn default_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let home = Home::new();
            let out = home.run(&["models", "pull", "gemma3-270m"]);
            assert!(
                out.status.success(),
                "could not pull the default model: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = home.run(&["models", "show", "gemma3-270m", "--json"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show --json");
            PathBuf::from(v["path"].as_str().expect("path in models show --json"))
        })
        .clone()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` with no stdin, killing it if it outlives [`DEADLINE`].
pub(crate) fn run_bounded(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    run_bounded_wait(child)
}

/// Runs `cmd` with `input` on its stdin (then closed), killing it if it outlives [`DEADLINE`].
pub(crate) fn run_bounded_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    // On a thread: a child that stops reading must not block the writer past the deadline.
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &input);
    });
    run_bounded_wait(child)
}

/// Waits for a spawned child (stdout may have been taken and read already), killing it if it
/// outlives [`DEADLINE`]; collects what is left of its output.
pub(crate) fn run_bounded_wait(mut child: std::process::Child) -> Output {
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(out_pipe.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = read(err_pipe.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gemmactl") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gemmactl did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
