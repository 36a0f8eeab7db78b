//! `gemmactl batch`: a file of requests in, a file of results out — one JSON object a line.
//!
//! A front end on the turn service like `run` and the shell: one [`TurnService`] (so one
//! supervisor, whose engine decodes `--parallel` lines together), one [`crate::chat::Thread`]
//! per line tagged with the batch and the line's id. The pieces:
//!
//! - `parse.rs` and `openai.rs` read lines in both formats (the simple one and the OpenAI batch
//!   file format), detected per line; `job.rs` holds what a line asks, or why it cannot be run;
//! - `plan.rs` settles everything before the first request (models, parameters, the output,
//!   what an earlier run answered), so a batch that cannot run is refused before any work;
//! - `dispatch.rs` keeps the lines in flight and handles Ctrl-C; `line.rs` runs one line;
//! - `record.rs` and `openai.rs` write results in the format their line came in; `output.rs`
//!   writes them whole, one per line (`--ordered`: in input order); `resume.rs` reads an
//!   earlier run's output back for `--resume`;
//! - `progress.rs` draws the bar and writes the summary.
//!
//! Exit codes: 0 when every line was answered, 1 when some failed (their results say why),
//! 2 for a usage error or input that cannot be read (nothing is run), 130 after Ctrl-C and 143
//! after SIGTERM (what finished is written; `--resume` runs the rest).

mod dispatch;
mod job;
mod line;
mod openai;
mod output;
mod parse;
mod plan;
mod progress;
mod record;
mod resume;

use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::chat::TurnService;
use crate::config::flags::{EngineFlags, LocalFlag, LogFlag, ModelFlag, SamplingFlags};
use crate::config::{Config, Paths};
use crate::domain::Source;
use crate::store::Store;
use dispatch::Stopped;
use job::Line;
use line::{Outcome, Shared};
use output::Output;
use plan::Plan;
use progress::Progress;

/// Most lines in flight at once (the engine's own limit on decode slots).
const MAX_PARALLEL: u32 = 256;

/// `gemmactl batch`'s arguments.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// Requests, one JSON object a line: {"id", "prompt"|"messages", …} or OpenAI batch requests; `-` reads stdin
    #[arg(value_name = "IN.jsonl|-")]
    input: String,
    /// Where the results go, one line per request; `-` (the default) is stdout
    #[arg(short, long, value_name = "OUT.jsonl|-")]
    output: Option<String>,
    #[command(flatten)]
    model: ModelFlag,
    /// Requests in flight at once, decoded together by the engine; given, the engine runs in
    /// this process (not a `gemmactl serve`'s) [env: GEMMACTL_PARALLEL; config: engine.parallel;
    /// default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_PARALLEL as i64))]
    parallel: Option<u32>,
    /// Skip the requests already answered in OUT.jsonl (after Ctrl-C, a crash or a kill) and retry failed ones
    #[arg(long)]
    resume: bool,
    /// Write results in input order, holding back those that finish early (default: as they finish)
    #[arg(long)]
    ordered: bool,
    #[command(flatten)]
    sampling: SamplingFlags,
    /// System prompt for every request that does not give its own "system"
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    #[command(flatten)]
    engine: EngineFlags,
    #[command(flatten)]
    log: LogFlag,
    #[command(flatten)]
    local: LocalFlag,
}

/// Runs `gemmactl batch`.
pub async fn run(args: BatchArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config)?;
    if let Some(n) = args.parallel {
        config.engine.parallel = n;
    }
    let plan = match Plan::make(&args, paths, &config) {
        Ok(plan) => plan,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = if args.log.logs(&config) {
        Some(Store::open_default(paths)?)
    } else {
        None
    };
    let logs = store.is_some();
    // Attached to this home's `gemmactl serve` when one runs (its warm engines and slots), else
    // with engines of its own, whose slot count `--parallel` sets.
    let local = args.local.local(&args.engine) || args.parallel.is_some();
    let service = TurnService::start(
        store,
        Source::Batch,
        paths,
        &config,
        "gemmactl batch",
        local,
    )
    .await;
    for note in &plan.notes {
        eprintln!("{note}");
    }
    let parallel = config.engine.parallel.max(1) as usize;
    eprintln!(
        "batch {}: {} lines to run, {parallel} at a time{}",
        plan.batch_id,
        plan.lines.len(),
        match plan.skipped {
            0 => String::new(),
            n => format!(" ({n} done before)"),
        }
    );
    let shared = Arc::new(Shared {
        service: service.clone(),
        batch_id: logs.then(|| plan.batch_id.clone()),
        cancel: CancellationToken::new(),
        in_flight: AtomicUsize::new(0),
        pool_waiting: AtomicUsize::new(0),
        finished: Notify::new(),
    });
    let mut runner = Runner {
        lines: &plan.lines,
        batch_id: &plan.batch_id,
        output: plan.output,
        to_stdout: plan.to_stdout,
        progress: Progress::new(plan.lines.len()),
        broken: None,
    };
    // Lines that cannot be run are done at once.
    let mut keep_going = true;
    for (seq, error) in plan.refused {
        keep_going &= runner.finished_line(seq, Outcome::Failed(error), false);
    }
    let limits = dispatch::Limits {
        parallel,
        max_models: config.supervisor.max_models as usize,
    };
    let outcome = if keep_going {
        dispatch::run(plan.work, shared, limits, &mut runner).await
    } else {
        Ok(Some(Stopped::Output))
    };
    service.shutdown().await;
    let Runner {
        mut output,
        progress,
        broken,
        ..
    } = runner;
    progress.finish();
    let stopped = outcome?;
    let flushed = output.finish();
    if let Some(e) = broken.or(flushed.err()) {
        eprintln!(
            "error: cannot write the results to {}: {e}",
            plan.shown_output
        );
        return Ok(ExitCode::FAILURE);
    }
    let total = plan.lines.len() + plan.skipped;
    eprintln!("{}", progress.summary(total, plan.skipped));
    if logs && progress.succeeded + progress.failed > 0 {
        eprintln!("history: gemmactl history list --batch {}", plan.batch_id);
    }
    if let Some(stopped) = stopped {
        let left = plan.lines.len() - progress.succeeded - progress.failed;
        eprintln!(
            "interrupted: {left} lines not run; the same command with --resume runs them{}",
            if plan.to_stdout {
                " (with -o FILE)"
            } else {
                ""
            }
        );
        let code = match stopped {
            Stopped::Terminate => 143,
            _ => 130,
        };
        return Ok(ExitCode::from(code));
    }
    Ok(if progress.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes each line's result as it ends and keeps the counts.
struct Runner<'a> {
    lines: &'a [Line],
    batch_id: &'a str,
    output: Output,
    to_stdout: bool,
    progress: Progress,
    /// Set when the output could not be written: the batch stops.
    broken: Option<std::io::Error>,
}

impl Runner<'_> {
    /// Writes the result of line `seq`; `ran` is false for a line refused before it ran.
    fn finished_line(&mut self, seq: usize, outcome: Outcome, ran: bool) -> bool {
        let line = &self.lines[seq];
        let record = match outcome {
            Outcome::Answered(answer) => {
                let usage = &answer.completion.usage;
                self.progress
                    .answered(usage.prompt_tokens, usage.completion_tokens);
                record::success(self.batch_id, line, &answer)
            }
            Outcome::Failed(error) => {
                self.progress.failed(&error.message, ran);
                record::failure(self.batch_id, line, &error)
            }
            Outcome::Cancelled => {
                self.progress.cancelled();
                return self.write(|out| out.skip(seq));
            }
        };
        self.write(|out| out.write(seq, &record))
    }

    fn write(&mut self, f: impl FnOnce(&mut Output) -> std::io::Result<()>) -> bool {
        let output = &mut self.output;
        let written = if self.to_stdout {
            self.progress.suspend(|| f(output))
        } else {
            f(output)
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                self.broken.get_or_insert(e);
                false
            }
        }
    }
}

impl dispatch::Report for Runner<'_> {
    fn finished(&mut self, seq: usize, outcome: Outcome) -> bool {
        self.finished_line(seq, outcome, true)
    }

    fn tick(&mut self) {
        self.progress.tick();
    }

    fn note(&mut self, text: &str) {
        self.progress.note(text);
    }
}
