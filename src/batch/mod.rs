//! `gemmactl batch`: a file of requests in, a file of results out — one JSON object a line.
//!
//! A front end on the turn service like `run` and the shell: one [`TurnService`] (so one
//! supervisor, whose engine decodes `--parallel` lines together), one [`crate::chat::Thread`]
//! per line tagged with the batch and the line's id. The pieces:
//!
//! - `parse.rs` and `openai.rs` read lines in both formats (the simple one and the OpenAI batch
//!   file format), detected per line; `job.rs` holds what a line asks, or why it cannot be run;
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
mod progress;
mod record;
mod resume;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::chat::TurnService;
use crate::config::flags::{EngineFlags, LogFlag, ModelFlag, SamplingFlags};
use crate::config::{Config, Paths};
use crate::domain::Source;
use crate::models::{self, ModelEntry, ModelError};
use crate::store::Store;
use crate::supervisor::Supervisor;
use dispatch::Stopped;
use job::{ErrorKind, Format, Line, LineError};
use line::{Outcome, Shared, Work};
use output::Output;
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
    /// Requests in flight at once, decoded together by the engine [env: GEMMACTL_PARALLEL; config: engine.parallel; default: 4]
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
}

/// Runs `gemmactl batch`.
pub async fn run(args: BatchArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config);
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
    let service = TurnService::new(
        Supervisor::new(config.clone(), paths, "gemmactl batch"),
        store,
        Source::Batch,
        paths,
        &config,
    );
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

/// Everything decided before the first request: refused here, nothing has been run.
struct Plan {
    /// The lines this run answers (skipped ones left out), in input order: a line's position
    /// here is its `seq`.
    lines: Vec<Line>,
    /// The lines to run.
    work: Vec<Work>,
    /// Lines that cannot be run, by `seq`, and why.
    refused: Vec<(usize, LineError)>,
    /// Lines answered by an earlier run.
    skipped: usize,
    batch_id: String,
    output: Output,
    to_stdout: bool,
    shown_output: String,
    /// Said on stderr before the run (models mapped, fields ignored, a torn line dropped).
    notes: Vec<String>,
}

impl Plan {
    fn make(args: &BatchArgs, paths: &Paths, config: &Config) -> Result<Plan, String> {
        let params = args.sampling.params().map_err(|e| e.to_string())?;
        let (input, shown_input) = read_input(&args.input)?;
        let out_path = args
            .output
            .as_deref()
            .filter(|o| *o != "-")
            .map(PathBuf::from);
        let mut notes = Vec::new();
        if let Some(path) = &out_path {
            check_output(path, &args.input, args.resume)?;
        } else if args.resume {
            return Err("--resume reads back the results of the earlier run: give the same output file with -o OUT.jsonl".into());
        }
        let all = parse::lines(&input);
        if let Some(dup) = parse::duplicate_ids(&all) {
            return Err(format!("{shown_input}: {dup}"));
        }
        let (done, batch_id) = match (&out_path, args.resume) {
            (Some(path), true) => {
                let ids: HashSet<String> = all
                    .iter()
                    .filter_map(|l| l.id.as_ref().map(|i| i.key.clone()))
                    .collect();
                let r = resume::prepare(path, &ids)?;
                if r.torn {
                    notes.push(format!(
                        "{}: dropped a partial last line left by the interrupted run",
                        path.display()
                    ));
                }
                if r.retried > 0 {
                    notes.push(format!(
                        "{}: {} failed requests will be tried again",
                        path.display(),
                        r.retried
                    ));
                }
                if r.foreign > 0 {
                    notes.push(format!(
                        "{}: kept {} results whose ids are not in {shown_input}",
                        path.display(),
                        r.foreign
                    ));
                }
                (r.done, r.batch_id)
            }
            _ => (HashSet::new(), None),
        };
        let total = all.len();
        let lines: Vec<Line> = all
            .into_iter()
            .filter(|l| !l.id.as_ref().is_some_and(|i| done.contains(&i.key)))
            .collect();
        let skipped = total - lines.len();
        let mut models = Models::new(paths, args.model.model.clone(), config);
        if args.model.model.is_some() {
            // Asked for by name: a wrong one stops the batch before anything runs.
            models.default_entry()?;
        }
        let mut work = Vec::new();
        let mut refused = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        for (seq, line) in lines.iter().enumerate() {
            let request = match &line.request {
                Ok(r) => r,
                Err(e) => {
                    refused.push((seq, e.clone()));
                    continue;
                }
            };
            for name in &request.ignored {
                if !ignored.contains(name) {
                    ignored.push(name.clone());
                }
            }
            let model = match models.for_line(line, request.model.as_deref(), &mut notes) {
                Ok(m) => m,
                Err(e) => {
                    refused.push((seq, e));
                    continue;
                }
            };
            let line_params = request.overrides.apply(&params);
            if let Err(why) = line_params.check(|n| n.to_string()) {
                let param = why.split_whitespace().next().unwrap_or("").to_string();
                let mut e = LineError::field(line.number, &param, why);
                e.param = Some(param);
                refused.push((seq, e));
                continue;
            }
            work.push(Work {
                seq,
                line_number: line.number,
                line_id: line.id.as_ref().map(|i| i.key.clone()).unwrap_or_default(),
                ask: request.ask.clone(),
                model,
                system: request.system.clone().or_else(|| args.system.clone()),
                params: line_params,
            });
        }
        if !ignored.is_empty() {
            notes.push(format!(
                "ignoring request fields gemmactl does not use: {}",
                ignored.join(", ")
            ));
        }
        let output = match &out_path {
            Some(path) => Output::append(path, args.ordered)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            None => Output::stdout(args.ordered),
        };
        Ok(Plan {
            lines,
            work,
            refused,
            skipped,
            batch_id: batch_id.unwrap_or_else(new_batch_id),
            output,
            to_stdout: out_path.is_none(),
            shown_output: out_path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "stdout".into()),
            notes,
        })
    }
}

/// The input's bytes, and how to name it.
fn read_input(arg: &str) -> Result<(Vec<u8>, String), String> {
    let mut bytes = Vec::new();
    if arg == "-" {
        if std::io::stdin().is_terminal() {
            return Err(
                "no input: give a file (gemmactl batch IN.jsonl) or pipe the requests on stdin"
                    .into(),
            );
        }
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the requests from stdin: {e}"))?;
        return Ok((bytes, "stdin".into()));
    }
    let bytes = std::fs::read(arg).map_err(|e| format!("cannot read {arg}: {e}"))?;
    Ok((bytes, arg.to_string()))
}

/// Refuses an output that is the input, or that holds results and is not being resumed.
fn check_output(path: &Path, input: &str, resume: bool) -> Result<(), String> {
    if input != "-" {
        if let (Ok(a), Ok(b)) = (std::fs::canonicalize(input), std::fs::canonicalize(path)) {
            if a == b {
                return Err(format!(
                    "{} is the input file: write the results to another file",
                    path.display()
                ));
            }
        }
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && !resume {
        return Err(format!(
            "{} already has results: add --resume to go on with that batch, or delete the file to start over",
            path.display()
        ));
    }
    Ok(())
}

/// A new batch's id: 12 hex digits, random enough never to repeat on one machine.
fn new_batch_id() -> String {
    // The standard library's hasher keys are random per process; no extra crate needed.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Model names resolved once each.
struct Models<'a> {
    paths: &'a Paths,
    default_name: String,
    resolved: HashMap<String, Result<ModelEntry, Unresolved>>,
    /// OpenAI model names already said to run on the default.
    mapped: HashSet<String>,
}

/// Why a model name could not be used.
#[derive(Clone)]
struct Unresolved {
    /// Nothing by that name is installed here (as opposed to a broken or missing download).
    unknown: bool,
    message: String,
}

impl<'a> Models<'a> {
    fn new(paths: &'a Paths, flag: Option<String>, config: &Config) -> Models<'a> {
        Models {
            paths,
            default_name: flag.unwrap_or_else(|| config.default_model.clone()),
            resolved: HashMap::new(),
            mapped: HashSet::new(),
        }
    }

    fn resolve(&mut self, name: &str) -> Result<ModelEntry, Unresolved> {
        self.resolved
            .entry(name.to_string())
            .or_insert_with(|| {
                models::resolve(self.paths, name).map_err(|e| Unresolved {
                    unknown: matches!(
                        e,
                        ModelError::Unknown { .. }
                            | ModelError::NotRegistered { .. }
                            | ModelError::FileMissing { .. }
                    ),
                    message: e.to_string(),
                })
            })
            .clone()
    }

    /// The default model (`--model`, else the configured one).
    fn default_entry(&mut self) -> Result<ModelEntry, String> {
        let name = self.default_name.clone();
        self.resolve(&name).map_err(|e| e.message)
    }

    /// The model a line runs on. A simple line's unknown model is an error for that line; an
    /// OpenAI line's model that is not installed here runs on the default (said once).
    fn for_line(
        &mut self,
        line: &Line,
        asked: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Result<ModelEntry, LineError> {
        let not_found = |message: String| {
            let mut error = LineError::new(ErrorKind::ModelNotFound, line.number, message);
            error.param = Some("model".into());
            error
        };
        let Some(name) = asked else {
            return self.default_entry().map_err(not_found);
        };
        match self.resolve(name) {
            Ok(entry) => Ok(entry),
            Err(e) if e.unknown && matches!(line.format, Format::OpenAi(_)) => {
                let entry = self.default_entry().map_err(not_found)?;
                if self.mapped.insert(name.to_string()) {
                    notes.push(format!(
                        "model {name} is not installed here: its requests run on {}",
                        entry.name
                    ));
                }
                Ok(entry)
            }
            Err(e) => Err(not_found(e.message)),
        }
    }
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
