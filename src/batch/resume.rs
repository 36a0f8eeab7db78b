//! `--resume`: which lines an earlier run of the same batch already answered.
//!
//! The earlier run may have been killed at any moment, so its output may end in a torn line;
//! that line is dropped. Error results are dropped too, so their lines are tried again (a fixed
//! model name, a freed engine), and each id ends up in the file exactly once. When anything is
//! dropped the kept lines are written to a temporary file that replaces the output in one
//! rename: killed during that, the old output is still whole.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::record::{read_back, Written};

/// What the earlier run left.
#[derive(Debug, Default)]
pub(super) struct Resumed {
    /// Ids answered already.
    pub(super) done: HashSet<String>,
    /// The batch the output was written by, to go on tagging the history with.
    pub(super) batch_id: Option<String>,
    /// A torn last line was dropped.
    pub(super) torn: bool,
    /// Error results dropped, to be tried again.
    pub(super) retried: usize,
    /// Answers whose ids are not in the input (kept as they are).
    pub(super) foreign: usize,
}

/// Reads `path` (absent: nothing done yet) and leaves in it only the answers to keep.
pub(super) fn prepare(path: &Path, input_ids: &HashSet<String>) -> Result<Resumed, String> {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resumed::default()),
        Err(e) => return Err(format!("cannot read {shown} to resume it: {e}")),
    };
    let mut resumed = Resumed::default();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut changed = false;
    let mut rest: &[u8] = &bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            // No newline: the write of this line was cut short.
            resumed.torn = true;
            changed = true;
            break;
        };
        let (line, tail) = (&rest[..=end], &rest[end + 1..]);
        rest = tail;
        if line.iter().all(u8::is_ascii_whitespace) {
            changed = true;
            continue;
        }
        let written: Option<Written> = serde_json::from_slice(line)
            .ok()
            .and_then(|v| read_back(&v));
        let Some(written) = written else {
            return Err(format!(
                "{shown} line {number} is not a result of gemmactl batch: resume only an output gemmactl batch wrote, or choose another -o"
            ));
        };
        if resumed.batch_id.is_none() {
            resumed.batch_id = written.batch_id.clone();
        }
        match written.id {
            Some(id) if written.success => {
                if !input_ids.contains(&id) {
                    resumed.foreign += 1;
                    kept.push(line);
                } else if resumed.done.insert(id) {
                    kept.push(line);
                } else {
                    changed = true;
                }
            }
            _ => {
                resumed.retried += 1;
                changed = true;
            }
        }
    }
    if changed {
        rewrite(path, &kept).map_err(|e| format!("cannot rewrite {shown} to resume it: {e}"))?;
    }
    Ok(resumed)
}

/// Replaces `path` with `lines`, atomically.
fn rewrite(path: &Path, lines: &[&[u8]]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for line in lines {
        tmp.write_all(line)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable once the folder is synced (best effort).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_torn_line_and_errors_are_dropped_and_answers_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let a = r#"{"id":"a","line":1,"batch_id":"b1","text":"x","finish_reason":"stop"}"#;
        let b = r#"{"id":"b","line":2,"batch_id":"b1","error":{"code":"engine_error","message":"line 2: boom"}}"#;
        let bad =
            r#"{"id":null,"line":3,"batch_id":"b1","error":{"code":"invalid_json","message":"m"}}"#;
        std::fs::write(&path, format!("{a}\n{b}\n{bad}\n{{\"id\":\"c\",\"li")).unwrap();
        let r = prepare(&path, &ids(&["a", "b", "c"])).unwrap();
        assert_eq!(r.done, ids(&["a"]));
        assert_eq!(r.batch_id.as_deref(), Some("b1"));
        assert!(r.torn);
        assert_eq!(r.retried, 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{a}\n"));
        // A second resume finds nothing to change.
        let r = prepare(&path, &ids(&["a", "b", "c"])).unwrap();
        assert!(!r.torn && r.retried == 0);
    }

    #[test]
    fn a_file_gemmactl_did_not_write_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "hello\n").unwrap();
        let e = prepare(&path, &ids(&["a"])).unwrap_err();
        assert!(
            e.contains("line 1 is not a result of gemmactl batch"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    }

    #[test]
    fn an_absent_output_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let r = prepare(&dir.path().join("none.jsonl"), &ids(&["a"])).unwrap();
        assert!(r.done.is_empty() && r.batch_id.is_none());
    }
}
