//! Leaving the shell on SIGTERM or SIGHUP (a closed terminal) without losing the reply.
//!
//! By default either signal ends the process at once, and the reply being streamed keeps only
//! what the last partial save stored. The shell instead listens for both: during a reply it
//! stops the reply — which records everything shown, marked `cancelled` — and then leaves; at the
//! prompt or during a command, a watcher task puts the terminal back, stops the engines and exits.
//! Either way the exit status is 128 + the signal's number, as if the signal had ended it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::termios::Termios;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::terminal;
use crate::chat::TurnService;

/// SIGTERM and SIGHUP, listened to from the shell's start.
pub(super) struct LeaveSignals {
    terminate: Signal,
    hangup: Signal,
}

impl LeaveSignals {
    /// Starts listening; call inside the runtime.
    pub(super) fn new() -> std::io::Result<LeaveSignals> {
        Ok(LeaveSignals {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of the two signals to arrive, as its number.
    pub(super) async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// Whether a reply is being shown; while it is, the reply's own loop handles the signals.
#[derive(Clone, Default)]
pub(super) struct Busy(Arc<AtomicBool>);

impl Busy {
    pub(super) fn set(&self, busy: bool) {
        self.0.store(busy, Ordering::SeqCst);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Spawns the watcher that leaves when a signal comes while no reply is shown: the prompt holds
/// the main thread in a blocking read that no signal ends.
pub(super) fn watch_idle(
    rt: &tokio::runtime::Runtime,
    busy: Busy,
    service: TurnService,
    original_mode: Option<Termios>,
) -> std::io::Result<()> {
    let mut signals = {
        let _guard = rt.enter();
        LeaveSignals::new()?
    };
    rt.spawn(async move {
        loop {
            let sig = signals.recv().await;
            if busy.get() {
                continue;
            }
            if let Some(mode) = &original_mode {
                terminal::reset(mode);
            }
            // Off the prompt's line, for whatever the terminal shows next. On a thread of its
            // own: a terminal that reads nothing more would block the write, and leaving must
            // not wait for it (exit ends the thread).
            std::thread::spawn(println_quietly);
            service.shutdown().await;
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// A line break on stdout, ignoring a terminal that is gone.
fn println_quietly() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
