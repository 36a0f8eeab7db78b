//! A small harness for the end-to-end tests: real binaries, a throw-away `GEMMACTL_HOME` per
//! test, and the real default model from the shared download cache.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `gemmactl` binary cargo built for these tests.
pub fn gemmactl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemmactl"))
}

/// `gemma-engine` sits next to `gemmactl` in the same target folder (`cargo build --workspace`).
pub fn engine_bin() -> PathBuf {
    let path = gemmactl_bin().with_file_name("gemma-engine");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (scripts/test.sh does) before the tests",
        path.display()
    );
    path
}

/// A temporary gemmactl home; dropped at the end of the test.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `gemmactl` command that uses this home and the shared download cache.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(gemmactl_bin());
        cmd.env("GEMMACTL_HOME", self.path())
            .env_remove("GEMMACTL_ENGINE")
            .env_remove("GEMMACTL_MODEL")
            .env_remove("GEMMACTL_CONTEXT")
            .env_remove("GEMMACTL_PARALLEL")
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn gemmactl")
    }
}

/// The real Gemma 3 270M GGUF, pulled once into the shared cache (a no-op when it is there).
pub fn default_model() -> PathBuf {
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
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("show --json");
            PathBuf::from(v["path"].as_str().expect("path in models show --json"))
        })
        .clone()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
