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
