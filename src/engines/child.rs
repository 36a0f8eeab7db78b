//! Starting engine processes so that they can never outlive gemmactl, and describing how one
//! ended in words a user can act on.
//!
//! Each engine runs in its own process group (a Ctrl-C typed in the terminal reaches gemmactl
//! only, which then cancels the reply instead of the engine dying behind its back) and asks Linux
//! to SIGKILL it when gemmactl dies, even by SIGKILL. Engines also exit when their stdin closes,
//! which covers every other platform.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Lines of an engine's stderr kept for error reports.
const STDERR_TAIL_LINES: usize = 20;

/// Configures a command so that the child dies with us and ignores the terminal's Ctrl-C.
pub fn isolate(cmd: &mut tokio::process::Command) {
    cmd.process_group(0).kill_on_drop(true);
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            // Runs in the child between fork and exec: only async-signal-safe calls here.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may already have died between fork and prctl.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn from_status(status: std::process::ExitStatus) -> ExitInfo {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// A likely cause, where the way it ended tells one.
    pub fn cause(&self) -> Option<&'static str> {
        match self.signal? {
            libc::SIGKILL => Some("most likely the system ran out of memory and killed it (or someone killed it): free memory, use a smaller model or a shorter context"),
            libc::SIGILL => Some("illegal instruction: the engine was built for a CPU with instructions this one lacks (e.g. AVX-512); rebuild it on this machine without CPU-specific flags"),
            libc::SIGSEGV | libc::SIGBUS => Some("it crashed (memory fault): the model file may be corrupt; check it with `gemmactl models show`, or report a bug with the engine's stderr"),
            libc::SIGABRT => Some("it aborted on an internal check: see the engine's last stderr lines below"),
            libc::SIGTERM | libc::SIGINT => Some("it was asked to stop by a signal from outside gemmactl"),
            _ => None,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "was killed by signal {sig} ({})", signal_name(sig)),
            (Some(code), None) => write!(f, "exited with status {code}"),
            (None, None) => write!(f, "ended for an unknown reason"),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// The last lines a child wrote to stderr, kept for error reports.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    /// Reads the stream to its end in a background task, keeping the last lines.
    pub fn collect(stream: impl AsyncRead + Unpin + Send + 'static, engine: String) -> StderrTail {
        let tail = StderrTail::default();
        let kept = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "engine_stderr", engine = %engine, "{line}");
                let mut buf = kept.0.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() == STDERR_TAIL_LINES {
                    buf.pop_front();
                }
                buf.push_back(line);
            }
        });
        tail
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Reaps `child` in a background task; the returned receiver holds how it ended once it has.
pub fn watch_exit(
    mut child: tokio::process::Child,
    what: &'static str,
) -> tokio::sync::watch::Receiver<Option<ExitInfo>> {
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let info = match child.wait().await {
            Ok(status) => ExitInfo::from_status(status),
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        };
        tracing::info!(pid, exit = %info, "{what} process ended");
        let _ = tx.send(Some(info));
    });
    rx
}

/// Sends a signal to a child that has not been reaped yet.
pub fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_signals_and_codes() {
        let killed = ExitInfo {
            code: None,
            signal: Some(libc::SIGKILL),
        };
        assert_eq!(killed.to_string(), "was killed by signal 9 (SIGKILL)");
        assert!(killed.cause().unwrap().contains("out of memory"));
        let ill = ExitInfo {
            code: None,
            signal: Some(libc::SIGILL),
        };
        assert!(ill.cause().unwrap().contains("illegal instruction"));
        let exited = ExitInfo {
            code: Some(3),
            signal: None,
        };
        assert_eq!(exited.to_string(), "exited with status 3");
        assert_eq!(exited.cause(), None);
    }
}
