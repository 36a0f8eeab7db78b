//! Which image files `analyze_image` may read: only those inside folders the user allowed
//! (`--image-dir`, `mcp.image_dirs`; by default the folder the server was started in). The
//! calling model chooses the path, so the check is on the file's real location, symbolic links
//! resolved; a path that does not exist is judged by its spelled-out location, so a client
//! cannot probe for files outside the allowed folders either.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// The folders images may come from.
#[derive(Debug, Clone)]
pub(super) struct ImagePolicy {
    /// Real (canonical) paths.
    allowed: Vec<PathBuf>,
    /// Where relative paths start.
    cwd: PathBuf,
}

impl ImagePolicy {
    /// The folders in `dirs` (relative ones from `cwd`); none given means `cwd` alone.
    pub(super) fn new(dirs: &[PathBuf], cwd: &Path) -> Result<ImagePolicy> {
        let cwd = cwd
            .canonicalize()
            .with_context(|| format!("cannot resolve the working folder {}", cwd.display()))?;
        let wanted: Vec<PathBuf> = if dirs.is_empty() {
            vec![cwd.clone()]
        } else {
            dirs.iter().map(|d| cwd.join(d)).collect()
        };
        let allowed = wanted
            .iter()
            .map(|d| {
                d.canonicalize().with_context(|| {
                    format!("image folder {} does not exist: fix --image-dir or mcp.image_dirs in config.toml", d.display())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ImagePolicy { allowed, cwd })
    }

    /// The folders, for messages.
    fn list(&self) -> String {
        self.allowed
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn inside(&self, path: &Path) -> bool {
        self.allowed.iter().any(|d| path.starts_with(d))
    }

    /// The real path of the image `given`, if the client may read it; else one sentence.
    pub(super) fn check(&self, given: &str) -> Result<PathBuf, String> {
        if given.trim().is_empty() {
            return Err("argument `image_path` is empty: give the path of an image file".into());
        }
        let spelled = normalize(&self.cwd.join(given));
        let outside = |real: Option<&Path>| {
            let via = match real {
                Some(r) if r != spelled => format!(" (it leads to {})", r.display()),
                _ => String::new(),
            };
            format!(
                "image {given}{via} is outside the folders gemmactl mcp may read images from ({}): move it there, or allow its folder with `gemmactl mcp --image-dir DIR` (or mcp.image_dirs in config.toml)",
                self.list()
            )
        };
        let real = match spelled.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.inside(&spelled) {
                    return Err(outside(None));
                }
                return Err(format!(
                    "image {given} does not exist: check the path (relative paths start at {})",
                    self.cwd.display()
                ));
            }
            Err(e) => return Err(format!("image {given} cannot be read: {e}")),
        };
        if !self.inside(&real) {
            return Err(outside(Some(&real)));
        }
        if !real.is_file() {
            return Err(format!(
                "image {given} is not a file: give the path of an image file"
            ));
        }
        Ok(real)
    }
}

/// `path` with `.` and `..` folded away, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_allowed_folders_pass_symlinks_resolved() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("shots");
        let secret = root.path().join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(allowed.join("a.png"), b"png").unwrap();
        std::fs::write(secret.join("key.png"), b"png").unwrap();
        std::os::unix::fs::symlink(secret.join("key.png"), allowed.join("link.png")).unwrap();
        let policy = ImagePolicy::new(&[PathBuf::from("shots")], root.path()).unwrap();

        assert!(policy.check("shots/a.png").is_ok());
        let inside = policy
            .check(allowed.join("a.png").to_str().unwrap())
            .unwrap();
        assert_eq!(inside, allowed.join("a.png").canonicalize().unwrap());

        let err = policy.check("secret/key.png").unwrap_err();
        assert!(err.contains("is outside the folders"), "{err}");
        let err = policy.check("shots/../secret/key.png").unwrap_err();
        assert!(err.contains("is outside the folders"), "{err}");
        let err = policy.check("shots/link.png").unwrap_err();
        assert!(
            err.contains("it leads to") && err.contains("key.png"),
            "{err}"
        );

        // Missing: said so inside, judged by location outside (no probing).
        let err = policy.check("shots/none.png").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = policy.check("secret/none.png").unwrap_err();
        assert!(err.contains("is outside the folders"), "{err}");
        assert!(policy.check("shots").unwrap_err().contains("not a file"));
        assert!(policy.check(" ").unwrap_err().contains("empty"));
    }

    #[test]
    fn the_default_is_the_working_folder_and_missing_folders_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.png"), b"png").unwrap();
        let policy = ImagePolicy::new(&[], root.path()).unwrap();
        assert!(policy.check("a.png").is_ok());
        assert!(policy.check("/etc/hostname").is_err());
        let err = ImagePolicy::new(&[PathBuf::from("nope")], root.path()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
