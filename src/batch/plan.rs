//! Everything decided before the first request, so that a batch that cannot run is refused
//! (exit 2) before any work: the input read and parsed, duplicate ids, the output checked (and
//! read back for `--resume`), each line's model and parameters settled or its error recorded.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use super::job::{ErrorKind, Format, Line, LineError};
use super::line::Work;
use super::output::Output;
use super::{parse, resume, BatchArgs};
use crate::config::{Config, Paths};
use crate::models::{self, ModelEntry, ModelError};

/// Everything decided before the first request: refused here, nothing has been run.
pub(super) struct Plan {
    /// The lines this run answers (skipped ones left out), in input order: a line's position
    /// here is its `seq`.
    pub(super) lines: Vec<Line>,
    /// The lines to run.
    pub(super) work: Vec<Work>,
    /// Lines that cannot be run, by `seq`, and why.
    pub(super) refused: Vec<(usize, LineError)>,
    /// Lines answered by an earlier run.
    pub(super) skipped: usize,
    pub(super) batch_id: String,
    pub(super) output: Output,
    pub(super) to_stdout: bool,
    pub(super) shown_output: String,
    /// Said on stderr before the run (models mapped, fields ignored, a torn line dropped).
    pub(super) notes: Vec<String>,
}

impl Plan {
    pub(super) fn make(args: &BatchArgs, paths: &Paths, config: &Config) -> Result<Plan, String> {
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
