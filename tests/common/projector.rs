//! The test vision projectors: Gemma 3 structure, random weights, written by
//! scripts/lib/make-test-projector.py into the test cache the first time a test needs one.
//!
//! No vision Gemma weights can be downloaded where these tests run, so the image path is tested
//! with these (see the script's docs); the tests check plumbing, never what a model "sees".

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Side of the test projector's images, in pixels (the script's IMAGE_SIZE).
pub(crate) const IMAGE_SIZE: u64 = 64;
/// Context tokens one image takes with it: (64 / 8 / 2)² = 16 embeddings and the two markers.
pub(crate) const TOKENS_PER_IMAGE: u64 = 18;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/make-test-projector.py")
}

fn cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    base.join("gemmactl-test")
}

/// The Python with `gguf` and `numpy` that scripts/test.sh prepares; made here if missing, so a
/// single test file can run on its own.
fn python() -> PathBuf {
    let venv = cache().join("venv");
    let python = venv.join("bin/python3");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import gguf, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("run python3 -m venv");
        assert!(made.success(), "could not make {}", venv.display());
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "gguf", "numpy"])
            .status()
            .expect("run pip");
        assert!(
            installed.success(),
            "could not install gguf and numpy in {}",
            venv.display()
        );
    }
    python
}

/// The projector mapping into `embedding`-wide embeddings (640: Gemma 3 270M's), made once per
/// version of the script.
pub(crate) fn test_projector(embedding: u32) -> PathBuf {
    let source = std::fs::read(script()).expect("read make-test-projector.py");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    let dir = cache().join("projectors");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "gemma3-test-mmproj-{embedding}-{:016x}.gguf",
        hasher.finish()
    ));
    if path.is_file() {
        return path;
    }
    // Written under a name of this process's, then renamed: tests running at once never see
    // half a file.
    let part = dir.join(format!(
        "{}.{}.part",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let out = Command::new(python())
        .arg(script())
        .arg(&part)
        .args(["--embedding", &embedding.to_string()])
        .output()
        .expect("run make-test-projector.py");
    assert!(
        out.status.success(),
        "make-test-projector.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&part, &path).unwrap();
    path
}

/// A binary PPM image: `pixel(x, y)` gives each pixel's RGB.
pub(crate) fn ppm(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut out = format!("P6\n{width} {height}\n255\n").into_bytes();
    for y in 0..height {
        for x in 0..width {
            out.extend_from_slice(&pixel(x, y));
        }
    }
    out
}
