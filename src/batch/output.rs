//! Where results go: stdout or a file, one whole line per write, flushed at once, so a run
//! killed at any moment leaves at most a torn last line (which `--resume` drops). `--ordered`
//! holds back results that finished before an earlier line's.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

/// The result stream.
pub(super) struct Output {
    sink: Sink,
    /// `Some` with `--ordered`: the next position to write and what waits for it.
    ordered: Option<(usize, BTreeMap<usize, String>)>,
}

enum Sink {
    Stdout,
    File(File),
}

impl Output {
    /// Results to stdout.
    pub(super) fn stdout(ordered: bool) -> Output {
        Output::new(Sink::Stdout, ordered)
    }

    /// Results appended to `path` (created if absent).
    pub(super) fn append(path: &Path, ordered: bool) -> io::Result<Output> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Output::new(Sink::File(file), ordered))
    }

    fn new(sink: Sink, ordered: bool) -> Output {
        Output {
            sink,
            ordered: ordered.then(|| (0, BTreeMap::new())),
        }
    }

    /// Writes the result at position `seq` (with `--ordered`, once every earlier one is out).
    pub(super) fn write(&mut self, seq: usize, record: &Value) -> io::Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        let Some((next, waiting)) = &mut self.ordered else {
            return write_line(&mut self.sink, &line);
        };
        waiting.insert(seq, line);
        while let Some(line) = waiting.remove(next) {
            write_line(&mut self.sink, &line)?;
            *next += 1;
        }
        Ok(())
    }

    /// Positions passed over (lines that will not be written this run, e.g. cancelled), so
    /// `--ordered` does not wait for them.
    pub(super) fn skip(&mut self, seq: usize) -> io::Result<()> {
        let Some((next, waiting)) = &mut self.ordered else {
            return Ok(());
        };
        waiting.insert(seq, String::new());
        while let Some(line) = waiting.remove(next) {
            if !line.is_empty() {
                write_line(&mut self.sink, &line)?;
            }
            *next += 1;
        }
        Ok(())
    }

    /// Writes what `--ordered` still holds (an interrupted run: later lines finished, earlier
    /// ones never will), in order, and makes the file durable.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        if let Some((_, waiting)) = &mut self.ordered {
            for line in std::mem::take(waiting).into_values() {
                if !line.is_empty() {
                    write_line(&mut self.sink, &line)?;
                }
            }
        }
        match &mut self.sink {
            Sink::File(f) => f.sync_all(),
            Sink::Stdout => io::stdout().flush(),
        }
    }
}

/// One whole line in one write, flushed: never half a result in the file but for a kill in the
/// middle of the write itself.
fn write_line(sink: &mut Sink, line: &str) -> io::Result<()> {
    match sink {
        Sink::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()
        }
        Sink::File(f) => f.write_all(line.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordered_output_holds_back_what_finished_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut out = Output::append(&path, true).unwrap();
        out.write(2, &json!({"n": 2})).unwrap();
        out.write(1, &json!({"n": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        out.skip(0).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
        out.write(4, &json!({"n": 4})).unwrap();
        out.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":4}\n"
        );
    }
}
