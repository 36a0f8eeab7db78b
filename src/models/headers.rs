//! The GGUF headers this process has already read, so that resolving a model again is a `stat`
//! instead of a walk over the file's header.
//!
//! `gemmactl serve`, `mcp` and `batch` resolve the model named in every request, and the
//! supervisor reads the header again for its memory estimate at every launch. Reading Gemma 3's
//! header means stepping over its 262,144-entry vocabulary: about 6 ms each time, which was most
//! of what an HTTP request added to the time to first token (docs/benchmarks.md). A header is
//! read again whenever the file's size, modification time, device or inode changes, so a re-downloaded or
//! replaced model is never judged by its old header; failures are not remembered, so a fixed
//! file is seen at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use gguf::{GgufError, GgufInfo};

/// Distinct files remembered at most; past it the memory starts afresh. Far more models than
/// anyone serves at once, so it only bounds what a long batch naming many files can make it hold.
const REMEMBERED: usize = 64;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    device: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            device,
            inode,
        }
    }
}

type Seen = HashMap<PathBuf, (Stamp, GgufInfo)>;

fn seen() -> std::sync::MutexGuard<'static, Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    // A panic while the lock was held cannot leave the map half-written: take it as it is.
    SEEN.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`gguf::inspect`], answered from memory when this version of the file was read before.
pub fn inspect(path: &Path) -> Result<GgufInfo, GgufError> {
    let Ok(meta) = std::fs::metadata(path) else {
        // Missing or unreadable: the inspector says which, in its own words.
        return gguf::inspect(path);
    };
    let stamp = Stamp::of(&meta);
    if let Some((_, info)) = seen().get(path).filter(|(s, _)| *s == stamp) {
        return Ok(info.clone());
    }
    let info = gguf::inspect(path)?;
    let mut seen = seen();
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert(path.to_path_buf(), (stamp, info.clone()));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::test_writer::Writer;

    /// A small model whose layer count is `blocks` (type 4: u32); its size does not depend on it.
    fn model(blocks: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.string("general.architecture", "gemma3")
            .int("gemma3.block_count", 4, &blocks.to_le_bytes())
            .tensor("output_norm.weight", &[64], 0);
        w.build()
    }

    #[test]
    fn a_replaced_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, model(18)).unwrap();
        assert_eq!(inspect(&path).unwrap().block_count, Some(18));
        assert_eq!(inspect(&path).unwrap().block_count, Some(18));
        // Same size, new contents: written to a new file and renamed over, as a download is.
        let next = dir.path().join("m.gguf.part");
        std::fs::write(&next, model(26)).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(inspect(&path).unwrap().block_count, Some(26));
    }

    #[test]
    fn a_file_that_breaks_or_goes_is_not_answered_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, model(18)).unwrap();
        inspect(&path).unwrap();
        std::fs::write(&path, b"not a model at all, but long enough to be read").unwrap();
        assert!(
            matches!(inspect(&path), Err(GgufError::NotGguf { .. })),
            "{:?}",
            inspect(&path)
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(inspect(&path), Err(GgufError::Missing { .. })));
    }
}
