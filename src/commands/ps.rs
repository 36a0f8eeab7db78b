//! `gemmactl ps`: the engines held by every running gemmactl process on this machine.
//!
//! Engines are children of the gemmactl that started them, so each gemmactl publishes a status
//! file in the state folder (`supervisor::status`); `ps` reads them all, skips (and removes) files
//! of processes that are gone, and adds live figures such as memory use from /proc.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::config::flags::JsonFlag;
use crate::config::Paths;
use crate::supervisor::status::{self, rss_bytes, unix_now};
use crate::ui::{self, say};

/// `gemmactl ps`'s arguments.
#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    json: JsonFlag,
}

/// Runs `gemmactl ps`.
pub fn run(args: PsArgs, paths: &Paths) -> Result<()> {
    let processes = status::read_all(&paths.run_dir());
    let now = unix_now();
    if args.json.json {
        let list: Vec<_> = processes
            .iter()
            .map(|p| {
                let engines: Vec<_> = p
                    .engines
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["rss_bytes"] = json!(e.pid.and_then(rss_bytes));
                        v["uptime_secs"] = json!(e.started_at.filter(|_| e.pid.is_some()).map(|t| now.saturating_sub(t)));
                        v["idle_secs"] = json!(e.last_used_at.filter(|_| e.active == 0).map(|t| now.saturating_sub(t)));
                        v
                    })
                    .collect();
                json!({"pid": p.pid, "command": p.command, "started_at": p.started_at, "engines": engines})
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if processes.iter().all(|p| p.engines.is_empty()) {
        say!("no engines running (no gemmactl process holds one)");
        return Ok(());
    }
    say!("{}", ui::table::processes(&processes, now));
    Ok(())
}
