//! A real `gemmactl serve` for the tests: started on a free loopback port, its URL read from the
//! line it prints, stopped (SIGTERM, then SIGKILL) when dropped. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Home;

/// How long a server may take to start listening.
const START: Duration = Duration::from_secs(60);

/// A running server.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// What it printed to stderr after the listening line.
    pub(crate) log: mpsc::Receiver<String>,
}

impl Server {
    /// `gemmactl serve --addr 127.0.0.1:0 ARGS` in `home`, once it listens.
    pub(crate) fn start(home: &Home, args: &[&str]) -> Server {
        Server::try_start(home, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start`], or what the server said when it did not start.
    pub(crate) fn try_start(home: &Home, args: &[&str]) -> Result<Server, String> {
        let mut cmd = home.cmd();
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn gemmactl serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("gemmactl serve listening on ") {
                        let url = rest.split_whitespace().next().unwrap().to_string();
                        return Ok(Server {
                            child,
                            url,
                            log: rx,
                        });
                    }
                    said.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    return Err(format!(
                        "gemmactl serve exited ({status}): {}",
                        said.join("\n")
                    ));
                }
            }
            if started.elapsed() > START {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "gemmactl serve did not listen within {START:?}: {}",
                    said.join("\n")
                ));
            }
        }
    }

    /// `/v1` of the server.
    pub(crate) fn api(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/health` answers 200 (the models loaded at start are loaded).
    pub(crate) fn wait_healthy(&self) {
        let started = Instant::now();
        loop {
            if let Ok(r) = ureq_get(&format!("{}/health", self.url)) {
                if r == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the server never became healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits (bounded) for it to exit.
    pub(crate) fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child by its pid; it has not been reaped (we own `child`).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The status of a plain GET over a raw socket (no client library needed for a health check).
fn ureq_get(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// The processes whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|pp| pp.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z" {
            kids.push(p);
        }
    }
    kids
}

/// Open file descriptors of `pid`.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
