//! Turning how gemma.cpp died into one sentence that names the weights file and the fix.
//!
//! gemma.cpp reports every fatal error as `Abort at <file>:<line>: <message>` on stderr followed
//! by abort() (SIGABRT); it dies by SIGILL when built for instructions this CPU lacks and by
//! SIGKILL when the kernel runs out of memory. The sentence comes first; the exit and the last
//! stderr lines follow it so nothing the binary said is lost.

use std::path::Path;

use super::super::child::ExitInfo;
use super::super::EngineError;
use crate::domain::ErrorCode;

/// A failure before the prompt marker appeared.
pub(super) fn startup(
    binary: &Path,
    weights: &Path,
    tokenizer: Option<&Path>,
    exit: ExitInfo,
    tail: &[String],
) -> EngineError {
    let w = weights.display();
    let abort = last_abort(tail);
    let said = |needle: &str| tail.iter().any(|l| l.contains(needle));
    let (code, sentence) = if let Some(msg) = abort.filter(|m| m.starts_with("Failed to open ")) {
        let opened = msg.trim_start_matches("Failed to open ").trim();
        match tokenizer.filter(|t| Path::new(opened) == *t) {
            Some(t) => (ErrorCode::ModelUnreadable, format!("gemma.cpp could not open the tokenizer file {} given for {w}: check the --tokenizer path and its read permission", t.display())),
            None if !weights.exists() => (ErrorCode::ModelNotFound, format!("gemma.cpp could not open the weights file {w} because it does not exist: check the path, or register the model again with `gemmactl models add NAME FILE.sbs --force`")),
            None => (ErrorCode::ModelUnreadable, format!("gemma.cpp could not open the weights file {w}: make it readable (`chmod a+r {w}`) and check that it is a regular file")),
        }
    } else if said("BlobStore header magic")
        || abort.is_some_and(|m| m.contains("Failed to read BlobStore"))
    {
        (ErrorCode::LoadFailed, format!("{w} is not a gemma.cpp BlobStore weights file (it may be a GGUF, a text file or an incomplete copy): run `gemmactl models check {w}`, and use the .sbs file of a gemma.cpp download"))
    } else if said("does not contain a tokenizer") {
        (ErrorCode::LoadFailed, format!("{w} is a pre-2025 multi-file gemma.cpp model and no tokenizer was given: register it with `gemmactl models add NAME {w} --tokenizer tokenizer.spm --force`, or convert it with gemma.cpp's migrate_weights"))
    } else if let Some(msg) = abort.filter(|m| {
        m.contains("Unknown tensor")
            || m.contains("is required but not found")
            || m.contains("mismatches file")
    }) {
        (ErrorCode::LoadFailed, format!("{w} does not match what this gemma.cpp build expects ({msg}): use weights made for this gemma.cpp version (pre-2025 files need their tokenizer, or conversion with migrate_weights) or update gemma.cpp"))
    } else if let Some(msg) = abort.filter(|m| m.contains("Failed to load tokenizer")) {
        (ErrorCode::LoadFailed, format!("gemma.cpp could not read the tokenizer for {w} ({msg}): pass the tokenizer.spm from the same download with --tokenizer, or use a single-file .sbs"))
    } else if let Some(msg) = abort.filter(|m| m.contains("Failed to read blob")) {
        (ErrorCode::ModelTruncated, format!("gemma.cpp could not read all of {w} ({msg}): the file is probably truncated or on a failing disk; run `gemmactl models check {w}` and copy it again"))
    } else if let Some(msg) =
        abort.filter(|m| m.contains("Missing value for") || m.contains("kMaxBatchSize"))
    {
        (ErrorCode::BadArguments, format!("gemma.cpp refused the command line gemmactl gave it for {w} ({msg}): this is a gemmactl bug, please report it with the lines below"))
    } else if said("Failed to load model") {
        (ErrorCode::LoadFailed, format!("an older gemma.cpp build said \"Failed to load model\" for {w}: check that the weights suit that build (older builds also need --tokenizer and the model type), or update gemma.cpp"))
    } else if let Some(msg) = abort {
        (ErrorCode::LoadFailed, format!("gemma.cpp aborted while loading {w} ({msg}): run `gemmactl models check {w}`; if the file is fine, the weights may not suit this gemma.cpp build"))
    } else {
        match exit.signal {
            Some(libc::SIGILL) => (ErrorCode::LoadFailed, format!("gemma.cpp ({}) died of an illegal instruction while loading {w}: it was built for a CPU with instructions this one lacks; rebuild gemma.cpp on this machine", binary.display())),
            Some(libc::SIGKILL) => (ErrorCode::OutOfMemory, format!("gemma.cpp was killed while loading {w}, most likely because memory ran out: free memory, lower engines.gemma_cpp.seq_len, or use a smaller or 8-bit (sfp) model")),
            Some(libc::SIGABRT) => (ErrorCode::LoadFailed, format!("gemma.cpp aborted while loading {w} without saying why: run `gemmactl models check {w}` and see its last stderr lines below")),
            Some(_) => (ErrorCode::LoadFailed, format!("gemma.cpp {exit} while loading {w}: see its last stderr lines below")),
            None => (ErrorCode::LoadFailed, format!("gemma.cpp {exit} while loading {w}, before it was ready: check that {} is gemma.cpp's `gemma` binary (GEMMA_BIN or engines.gemma_cpp.binary)", binary.display())),
        }
    };
    EngineError::Load {
        code,
        message: with_details(sentence, exit, tail),
        path: Some(weights.display().to_string()),
    }
}

/// A process that died in the middle of a turn. A prompt too long for the KV cache is the
/// caller's to fix; everything else is the engine dying (exit, cause and stderr kept).
pub(super) fn mid_run(exit: ExitInfo, tail: Vec<String>) -> EngineError {
    if let Some(msg) = last_abort(&tail).filter(|m| m.contains("max_prompt_size")) {
        return EngineError::Request {
            code: ErrorCode::ContextOverflow,
            message: format!("the prompt is longer than gemma.cpp's KV cache ({msg}): raise engines.gemma_cpp.seq_len or shorten the conversation"),
        };
    }
    EngineError::Died {
        engine: crate::domain::EngineKind::GemmaCpp,
        exit,
        stderr_tail: tail,
    }
}

fn last_abort(tail: &[String]) -> Option<&str> {
    tail.iter().rev().find_map(|l| {
        // A mid-turn abort shares its line with the unterminated "[ Reading prompt ] ".
        let rest = &l[l.find("Abort at ")? + "Abort at ".len()..];
        Some(rest.split_once(": ").map_or(rest, |(_, m)| m).trim())
    })
}

fn with_details(sentence: String, exit: ExitInfo, tail: &[String]) -> String {
    let mut msg = sentence;
    msg.push_str(&format!("\n  the process {exit}"));
    msg.push_str(&crate::engines::stderr_excerpt(tail));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abrt() -> ExitInfo {
        ExitInfo {
            code: None,
            signal: Some(libc::SIGABRT),
        }
    }

    #[test]
    fn aborts_become_sentences_naming_the_file() {
        let tail = vec!["Abort at io.cc:199: Failed to open /nonexistent.sbs".to_string()];
        let e = startup(
            Path::new("gemma"),
            Path::new("/nonexistent.sbs"),
            None,
            abrt(),
            &tail,
        );
        let EngineError::Load { code, message, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(code, ErrorCode::ModelNotFound);
        assert!(message.starts_with("gemma.cpp could not open the weights file /nonexistent.sbs because it does not exist"), "{message}");
        assert!(
            message.contains("SIGABRT") && message.contains("Abort at io.cc:199"),
            "{message}"
        );

        let tail = vec![
            "Warn at blob_store.cc:120: BlobStore header magic 46554747 does not match 0a534253."
                .to_string(),
            "Abort at blob_store.cc:227: Failed to read BlobStore header or directory.".to_string(),
        ];
        let msg = startup(Path::new("gemma"), Path::new("m.gguf"), None, abrt(), &tail).to_string();
        assert!(
            msg.starts_with("m.gguf is not a gemma.cpp BlobStore weights file"),
            "{msg}"
        );

        let ill = ExitInfo {
            code: None,
            signal: Some(libc::SIGILL),
        };
        let msg = startup(Path::new("/opt/gemma"), Path::new("w.sbs"), None, ill, &[]).to_string();
        assert!(
            msg.contains("illegal instruction") && msg.contains("rebuild gemma.cpp"),
            "{msg}"
        );
        let kill = ExitInfo {
            code: None,
            signal: Some(libc::SIGKILL),
        };
        let e = startup(Path::new("gemma"), Path::new("w.sbs"), None, kill, &[]);
        assert!(
            matches!(
                e,
                EngineError::Load {
                    code: ErrorCode::OutOfMemory,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn an_overlong_prompt_is_the_callers_error() {
        let tail = vec!["[ Reading prompt ] Abort at gemma.cc:412: max_prompt_size = 9000, increase --seq_len to at least that.".to_string()];
        let e = mid_run(abrt(), tail);
        assert!(
            matches!(
                e,
                EngineError::Request {
                    code: ErrorCode::ContextOverflow,
                    ..
                }
            ),
            "{e}"
        );
        let e = mid_run(
            ExitInfo {
                code: None,
                signal: Some(libc::SIGKILL),
            },
            vec![],
        );
        assert!(
            e.to_string()
                .starts_with("gemma.cpp was killed by signal 9"),
            "{e}"
        );
    }
}
