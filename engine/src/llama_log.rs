//! Captures llama.cpp's log instead of letting ~1500 lines a load reach stderr.
//!
//! The last warnings and errors are kept so a failed load can say *why* in its error event
//! ("unknown model architecture: 'foo'") rather than the crate's bare "null result". With
//! `--verbose` every line is also copied to stderr. stdout is never touched.

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use llama_cpp_sys_2::{
    ggml_log_level, GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_WARN,
};

const KEPT_LINES: usize = 16;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
/// Whether the previous line was kept, so that `CONT` continuations follow their line.
static KEEPING: AtomicBool = AtomicBool::new(false);

pub(crate) fn install(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    // SAFETY: llama_log_set only stores the callback and the (null) user pointer; `on_log` is a
    // plain function valid for the whole process and touches no user data.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

unsafe extern "C" fn on_log(level: ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for this call; it is not null.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if VERBOSE.load(Ordering::Relaxed) {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    let keep = match level {
        GGML_LOG_LEVEL_WARN | GGML_LOG_LEVEL_ERROR => true,
        GGML_LOG_LEVEL_CONT => KEEPING.load(Ordering::Relaxed),
        _ => false,
    };
    KEEPING.store(keep, Ordering::Relaxed);
    if !keep {
        return;
    }
    let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    let line = text.trim_end().to_string();
    if level == GGML_LOG_LEVEL_CONT {
        if let Some(last) = recent.back_mut() {
            last.push_str(&line);
            return;
        }
    }
    if recent.len() == KEPT_LINES {
        recent.pop_front();
    }
    recent.push_back(line);
}

/// The most telling recent llama.cpp complaint: the last error line, else the last warning.
pub(crate) fn last_complaint() -> Option<String> {
    let recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    recent.iter().rev().find(|l| !l.trim().is_empty()).map(|l| {
        l.trim()
            .trim_start_matches("llama_model_load: error loading model: ")
            .to_string()
    })
}
