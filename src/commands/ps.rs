//! `gemmactl ps`: the engines held by every running gemmactl process on this machine.
//!
//! Engines are children of the gemmactl that started them, so each gemmactl publishes a status
//! file in the state folder (`supervisor::status`); `ps` reads them all, skips (and removes) files
//! of processes that are gone, and adds live figures such as memory use from /proc.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::config::Paths;
use crate::supervisor::status::{self, rss_bytes, unix_now};

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Print a JSON array (one object per gemmactl process, with its engines)
    #[arg(long)]
    json: bool,
}

pub fn run(args: PsArgs, paths: &Paths) -> Result<()> {
    show(paths, args.json)
}

/// Prints the table (or JSON); the chat shell's `/ps` calls this too.
pub fn show(paths: &Paths, json_out: bool) -> Result<()> {
    let processes = status::read_all(&paths.run_dir());
    let now = unix_now();
    if json_out {
        let list: Vec<_> = processes
            .iter()
            .map(|p| {
                let engines: Vec<_> = p
                    .engines
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).expect("serializable");
                        v["rss_bytes"] = json!(e.pid.and_then(rss_bytes));
                        v["uptime_secs"] = json!(e.started_at.filter(|_| e.pid.is_some()).map(|t| now.saturating_sub(t)));
                        v["idle_secs"] = json!(e.last_used_at.filter(|_| e.active == 0).map(|t| now.saturating_sub(t)));
                        v
                    })
                    .collect();
                json!({"pid": p.pid, "command": p.command, "started_at": p.started_at, "engines": engines})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: usize = processes.iter().map(|p| p.engines.len()).sum();
    if rows == 0 {
        println!("no engines running (no gemmactl process holds one)");
        return Ok(());
    }
    println!(
        "{:<8} {:<20} {:<13} {:<8} {:<9} {:<8} {:>8} {:>8} {:>7} {:>7} {:>6}",
        "GEMMACTL",
        "MODEL",
        "ENGINE",
        "BACKEND",
        "STATE",
        "PID",
        "RSS",
        "UPTIME",
        "IDLE",
        "SERVED",
        "QUEUE"
    );
    for p in &processes {
        for e in &p.engines {
            let rss = e
                .pid
                .and_then(rss_bytes)
                .map(|b| format!("{} MiB", b >> 20))
                .unwrap_or_else(|| "-".into());
            let up = e
                .started_at
                .filter(|_| e.pid.is_some())
                .map(|t| duration(now.saturating_sub(t)))
                .unwrap_or_else(|| "-".into());
            let idle = match (e.active, e.last_used_at) {
                (0, Some(t)) => duration(now.saturating_sub(t)),
                (0, None) => "-".into(),
                _ => "busy".into(),
            };
            println!(
                "{:<8} {:<20} {:<13} {:<8} {:<9} {:<8} {:>8} {:>8} {:>7} {:>7} {:>6}",
                p.pid,
                e.model,
                e.engine,
                e.backend,
                e.state,
                e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                rss,
                up,
                idle,
                e.requests_served,
                e.queued
            );
            if let Some(reason) = e.reason.as_ref().filter(|_| e.state == "failed") {
                println!("         └ {reason}");
            }
            if let Some(fallback) = &e.fallback {
                println!("         └ fallback: {fallback}");
            }
        }
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
