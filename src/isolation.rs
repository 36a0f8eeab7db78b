//! Child processes that can never outlive gemmactl and never see the terminal's Ctrl-C.
//!
//! Every program gemmactl starts — engines and the driver probes of `doctor` alike — goes through
//! [`isolate`]: it runs in its own process group, so a Ctrl-C typed in the terminal reaches
//! gemmactl only (which then cancels the reply instead of an engine dying behind its back), and it
//! asks Linux to SIGKILL it when gemmactl dies, even by SIGKILL. Engines also exit when their stdin
//! closes, which covers every other platform.

/// Configures `cmd` so the child dies with gemmactl and ignores the terminal's signals.
pub fn isolate(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
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

/// Ends a process group gemmactl created with [`isolate`] (its leader's pid names it), so that
/// nothing a probe left running keeps its pipes open. Probes only: engines are stopped through
/// their owned child handle.
pub fn kill_group(leader: u32) {
    let Ok(group) = libc::pid_t::try_from(leader) else {
        return;
    };
    if group <= 1 {
        // 0 would be our own group and 1 every process: never.
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that group; a stale group only yields ESRCH.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit status, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// From the operating system's status.
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
            libc::SIGILL => Some("illegal instruction: the engine was built for CPU extensions this CPU or OS cannot run (e.g. AVX-512 or AMX; `gemmactl doctor` compares the two); rebuild it here with ./scripts/setup.sh, which builds for what runs, or with GEMMACTL_PORTABLE=1 ./scripts/setup.sh"),
            libc::SIGSEGV | libc::SIGBUS => Some("it crashed (memory fault): the model file may be corrupt; check it with `gemmactl models show`, or report a bug with the engine's stderr"),
            libc::SIGABRT => Some("it aborted on an internal check: see the engine's last stderr lines below"),
            libc::SIGTERM | libc::SIGINT => Some("it was asked to stop by a signal from outside gemmactl"),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "was killed by signal {sig} ({})", signal_name(sig)),
            (Some(code), None) => write!(f, "exited with status {code}"),
            (None, None) => write!(f, "ended for an unknown reason"),
        }
    }
}

/// The usual name of a signal number.
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
