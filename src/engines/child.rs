//! An engine's process, owned: how it is spawned, how it ends, and how it is told to end.
//!
//! gemmactl never signals an engine by a bare pid. The reaper task that waits for the child also
//! owns its `tokio::process::Child`, and [`ChildProcess::kill`] asks that task to kill it through
//! the handle, so a pid that was reused after the child ended can never be hit. Spawning goes
//! through [`crate::isolation::isolate`] (own process group, dies with gemmactl).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{watch, Notify};

/// Lines of an engine's stderr kept for error reports.
const STDERR_TAIL_LINES: usize = 20;

/// Spawns `cmd` isolated (see [`crate::isolation`]); the child is killed if its handle is lost.
pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    crate::isolation::isolate(cmd.as_std_mut());
    cmd.kill_on_drop(true).spawn()
}

/// How a child process ended, and a signal's name: in [`crate::isolation`], where the model
/// tools that run an engine binary (`models import`) can use them too.
pub use crate::isolation::{signal_name, ExitInfo};

/// The last lines a child wrote to stderr, kept for error reports.
///
/// The lines are read by a task of their own, so when the child's exit is noticed that task may
/// not yet have read what the child wrote just before it ended — often the one line that says
/// why. Reports about an ended child therefore take [`StderrTail::at_end`], which waits for the
/// stream's end first.
#[derive(Clone)]
pub struct StderrTail {
    kept: Arc<Mutex<VecDeque<String>>>,
    /// `true` once the stream has been read to its end.
    ended: watch::Receiver<bool>,
}

/// How long [`StderrTail::at_end`] waits for the end of the stream. A child that ended closes
/// its end of the pipe at once; only a grandchild that inherited it could hold it open longer.
const STDERR_END_WAIT: Duration = Duration::from_secs(2);

impl StderrTail {
    /// Reads the stream to its end in a background task, keeping the last lines.
    pub fn collect(stream: impl AsyncRead + Unpin + Send + 'static, engine: String) -> StderrTail {
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let (ended_tx, ended) = watch::channel(false);
        let buf = kept.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "engine_stderr", engine = %engine, "{line}");
                let mut buf = buf.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() == STDERR_TAIL_LINES {
                    buf.pop_front();
                }
                buf.push_back(line);
            }
            let _ = ended_tx.send(true);
        });
        StderrTail { kept, ended }
    }

    /// The lines kept so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The last lines of a child that has ended: waits (at most 2 s) until the
    /// stream has been read to its end, so the child's last words are among them.
    pub async fn at_end(&self) -> Vec<String> {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(STDERR_END_WAIT, ended.wait_for(|e| *e)).await;
        self.lines()
    }
}

/// A running child process: its pid (for display), how it ended once it has, and a way to end it.
#[derive(Clone)]
pub struct ChildProcess {
    pid: Option<u32>,
    kill: Arc<Notify>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl ChildProcess {
    /// Reaps `child` in a background task that owns it; `what` names it in the log.
    pub fn watch(mut child: tokio::process::Child, what: &'static str) -> ChildProcess {
        let pid = child.id();
        let kill = Arc::new(Notify::new());
        let (tx, exit) = watch::channel(None);
        let killer = kill.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = killer.notified() => {
                        // Through the owned handle: a no-op if the child was reaped already.
                        let _ = child.start_kill();
                    }
                }
            };
            let info = match status {
                Ok(status) => ExitInfo::from_status(status),
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            };
            tracing::info!(pid, exit = %info, "{what} process ended");
            let _ = tx.send(Some(info));
        });
        ChildProcess { pid, kill, exit }
    }

    /// The process id, for `ps` and logs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// `Some` once the process has ended.
    pub fn exit_status(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Kills the process (SIGKILL) if it still runs.
    pub fn kill(&self) {
        if self.exit_status().is_none() {
            self.kill.notify_one();
        }
    }

    /// Whether the process ended within `limit`.
    pub async fn exited_within(&self, limit: Duration) -> bool {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// How the process ended, waiting up to 10 s for it to be reaped (an unknown end after that).
    pub async fn wait_exit(&self) -> ExitInfo {
        self.exited_within(Duration::from_secs(10)).await;
        self.exit_status().unwrap_or(ExitInfo {
            code: None,
            signal: None,
        })
    }

    /// Kills the process and waits (bounded) until it has been reaped.
    pub async fn kill_and_wait(&self) -> ExitInfo {
        self.kill();
        self.wait_exit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child whose last words reach the pipe after its exit was seen: here they come from a
    /// process it left behind, 300 ms later, which is how late a busy reader can be. The report
    /// taken after the exit still has them.
    #[tokio::test]
    async fn the_last_words_before_an_exit_are_in_the_report() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("echo starting >&2; (sleep 0.3; echo 'the reason' >&2) & exit 3")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = spawn(&mut cmd).unwrap();
        let tail = StderrTail::collect(child.stderr.take().unwrap(), "test".into());
        let process = ChildProcess::watch(child, "test");
        let exit = process.wait_exit().await;
        assert_eq!(exit.code, Some(3));
        assert_eq!(tail.at_end().await, ["starting", "the reason"]);
    }

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
