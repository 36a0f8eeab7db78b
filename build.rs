//! Records the git commit gemmactl is built from, so that a benchmark result can say which code it
//! measured (`gemmactl bench` writes it into its results file). A build outside a git checkout
//! (a source archive, a package) says `unknown` rather than failing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GEMMACTL_GIT_COMMIT={commit}");

    // Run again when HEAD moves: HEAD itself (a checkout) and the branch it points to (a commit).
    // In a worktree these live in different folders, so ask git where each one is. Only files
    // that exist are named: cargo treats a missing one as always changed.
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head.into());
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &branch]) {
            watched.push(path.into());
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watched.push(packed.into());
    }
    for path in watched.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
