//! Running a probe in a child process, bounded by a timeout.
//!
//! Driver libraries (NVML, the Vulkan loader, OpenVINO's plugins, CUDA inside a GPU build of
//! gemma-engine) run their own code when loaded; a broken driver can crash or hang the process
//! that loads it. So gemmactl never loads them itself: it runs a child (`gemmactl doctor
//! --probe-gpu KIND`, or `gemma-engine --probe`) that prints one JSON answer, and a crash, a hang
//! or garbage becomes one sentence in the report instead of taking gemmactl down.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

/// Runs `program args`, waits at most `limit`, and reads the last stdout line that parses as `T`.
/// Every failure is a sentence naming `what` (e.g. "the NVIDIA probe").
pub fn run_json<T: DeserializeOwned>(
    program: &Path,
    args: &[&str],
    limit: Duration,
    what: &str,
) -> Result<T, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::isolation::isolate(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what} could not be started ({}: {e})", program.display()))?;
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        return Err(format!("{what}'s output could not be connected"));
    };
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= limit => {
                crate::isolation::kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not answer within {:.0} s and was stopped (a hung driver?)",
                    limit.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{what} could not be waited for: {e}")),
        }
    };
    // Anything the probe left running in its group would keep the pipes open: end it.
    crate::isolation::kill_group(child.id());
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let last_err = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return Err(format!(
            "{what} crashed (signal {signal}{})",
            last_err
                .map(|l| format!("; it last said: {l}"))
                .unwrap_or_default()
        ));
    }
    let parsed = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<T>(l).ok());
    match (parsed, status.success()) {
        (Some(v), true) => Ok(v),
        (_, false) => Err(format!(
            "{what} failed (exit status {}){}",
            status.code().unwrap_or(-1),
            last_err.map(|l| format!(": {l}")).unwrap_or_default()
        )),
        (None, true) => Err(format!("{what} gave no answer gemmactl understands")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit: Duration) -> Result<serde_json::Value, String> {
        run_json(
            Path::new("/bin/sh"),
            &["-c", script],
            limit,
            "the test probe",
        )
    }

    #[test]
    fn the_last_json_line_is_the_answer() {
        let v = sh("echo noise; echo '{\"a\":1}'", Duration::from_secs(10)).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn a_crash_is_a_sentence() {
        let e = sh(
            "echo 'driver exploded' >&2; kill -SEGV $$",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            e.contains("crashed (signal 11") && e.contains("driver exploded"),
            "{e}"
        );
    }

    #[test]
    fn what_a_probe_leaves_behind_cannot_hold_the_answer_back() {
        let started = Instant::now();
        let v = sh("sleep 30 & echo '{\"a\":2}'", Duration::from_secs(20)).unwrap();
        assert_eq!(v["a"], 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_hang_is_bounded() {
        let started = Instant::now();
        let e = sh("sleep 30", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_failure_carries_its_last_words() {
        let e = sh(
            "echo 'libcuda.so.1: cannot open shared object file' >&2; exit 127",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            e.contains("exit status 127") && e.contains("libcuda.so.1"),
            "{e}"
        );
        let missing = run_json::<serde_json::Value>(
            Path::new("/nonexistent/probe"),
            &[],
            Duration::from_secs(1),
            "x",
        )
        .unwrap_err();
        assert!(missing.contains("could not be started"), "{missing}");
    }
}
