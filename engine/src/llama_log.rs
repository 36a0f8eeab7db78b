//! Captures llama.cpp's log instead of letting ~1500 lines a load reach stderr.
//!
//! The last warnings and errors are kept so a failed load can say *why* in its error event
//! ("unknown model architecture: 'foo'") rather than the crate's bare "null result". With
//! `--verbose` every line is also copied to stderr. stdout is never touched.

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use llama_cpp_sys_2::{
    ggml_log_level, GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_WARN,
};

const KEPT_LINES: usize = 16;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
/// Whether the previous line was kept, so that `CONT` continuations follow their line.
static KEEPING: AtomicBool = AtomicBool::new(false);
/// Lines kept so far, so a caller can tell a complaint of its own call from an older one.
static KEPT: AtomicU64 = AtomicU64::new(0);

pub(crate) fn install(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    // SAFETY: llama_log_set only stores the callback and the (null) user pointer; `on_log` is a
    // plain function valid for the whole process and touches no user data.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut()) };
}

/// Sends llama.cpp's multimodal library's log (its own logger, which would print to stderr) to
/// the same place, so a projector that fails to load can say why too.
pub(crate) fn install_mtmd() {
    // SAFETY: as in `install`: the callback is a plain function valid for the whole process.
    unsafe { llama_cpp_sys_2::mtmd_helper_log_set(Some(on_log), std::ptr::null_mut()) };
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
    KEPT.fetch_add(1, Ordering::Relaxed);
}

/// A mark for [`complaint_since`]: how many lines have been kept until now.
pub(crate) fn mark() -> u64 {
    KEPT.load(Ordering::Relaxed)
}

/// The last complaint, if llama.cpp made one after `mark` (and not, say, during the load).
pub(crate) fn complaint_since(mark: u64) -> Option<String> {
    (KEPT.load(Ordering::Relaxed) > mark)
        .then(last_complaint)
        .flatten()
}

/// Runs `f` with the process's stderr going to a private file, and returns what was written
/// there, which is then passed on to the real stderr. Some llama.cpp failures are only ever
/// explained by an `fprintf(stderr, ...)` (its grammar parser's), not through the log callback.
/// A file rather than a pipe, so a long message cannot fill a buffer nobody reads yet.
#[cfg(unix)]
pub(crate) fn with_stderr_captured<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;

    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "gemma-engine-{}-{}.stderr",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    let Ok(mut file) = file else {
        return (f(), String::new());
    };
    let _ = std::io::stderr().flush();
    // SAFETY: dup, dup2 and close act on descriptors that stay open for the whole call (2 and
    // `file`) or that this block owns (`saved`, the duplicate of 2); no Rust object owns 2.
    let saved = unsafe {
        let saved = libc::dup(2);
        if saved >= 0 && libc::dup2(file.as_raw_fd(), 2) < 0 {
            libc::close(saved);
            -1
        } else {
            saved
        }
    };
    if saved < 0 {
        return (f(), String::new());
    }
    let out = f();
    // SAFETY: as above; a null stream flushes every C stdio stream, stderr's included, before
    // descriptor 2 is pointed back at the real stderr.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut printed = String::new();
    if file.seek(SeekFrom::Start(0)).is_ok() {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        printed = String::from_utf8_lossy(&bytes).into_owned();
    }
    let _ = std::io::stderr().write_all(printed.as_bytes());
    (out, printed)
}

/// Elsewhere stderr is left alone and the reason comes from the log alone.
#[cfg(not(unix))]
pub(crate) fn with_stderr_captured<T>(f: impl FnOnce() -> T) -> (T, String) {
    (f(), String::new())
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
