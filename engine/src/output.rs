//! The engine's only writer to stdout. Every protocol event is one JSON line, flushed at once so
//! the supervisor sees tokens as they are made. Nothing else in the engine may print to stdout.

use std::io::Write;
use std::sync::Mutex;

use engine_protocol::{ErrorCode, ErrorInfo, Event};

static STDOUT: Mutex<()> = Mutex::new(());

pub(crate) fn emit(event: &Event) {
    // Protocol events are plain structs of strings and numbers: serializing cannot fail.
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    let _guard = STDOUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    // A closed stdout means the supervisor is gone; the stdin watcher ends the process then.
    let _ = out.write_all(&line).and_then(|_| out.flush());
}

/// A line outside the serving protocol (the `--export-sbs` mode's progress), same discipline.
pub(crate) fn emit_value(value: &serde_json::Value) {
    // A JSON value always serializes; nothing is written if it somehow does not.
    let Ok(mut line) = serde_json::to_vec(value) else {
        return;
    };
    line.push(b'\n');
    let _guard = STDOUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line).and_then(|_| out.flush());
}

pub(crate) fn emit_error(
    id: Option<&str>,
    code: ErrorCode,
    message: impl Into<String>,
    path: Option<&str>,
) {
    emit(&Event::Error(ErrorInfo {
        id: id.map(str::to_string),
        code,
        message: message.into(),
        path: path.map(str::to_string),
    }));
}
