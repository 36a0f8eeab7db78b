//! Reads the header and directory of gemma.cpp's `.sbs` weight files ("BlobStore"), so that a file
//! gemma.cpp cannot load is refused before launch with one sentence, instead of an `Abort at ...`
//! line from a dead process.
//!
//! A BlobStore is a 16-byte header (`u32 magic "SBS\n"`, `u32 num_blobs`, `u64 file_bytes`) and a
//! directory: `num_blobs` 16-byte zero-padded keys, then `num_blobs` `{u64 offset, u64 size}`
//! pairs. V1 files keep header and directory at offset 0; V2 files keep a placeholder header
//! `{magic, 0, 65536}` there and the directory plus the real header at the very end. Like
//! gemma.cpp, [`parse`] tries V1 first, then V2.
//!
//! The reader never trusts a size from the file before checking it against the file's length and
//! a fixed cap, so no input makes it panic or allocate more than about 600 KiB (the property tests
//! below feed it arbitrary and mutated bytes).

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub const MAGIC: u32 = 0x0A53_4253;
/// gemma.cpp refuses more blobs than this.
pub const MAX_BLOBS: u32 = 16384;
const HEADER_BYTES: u64 = 16;
/// Bytes of the `config` blob searched for the model specifier.
const CONFIG_SCAN_BYTES: u64 = 64 << 10;

/// Where the directory sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    V1,
    V2,
}

/// Which generation of gemma.cpp's weight format a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SbsFormat {
    /// 2025 and later: `config`, `tokenizer` and `toc` blobs inside; only `--weights` is needed.
    SingleFile,
    /// Before 2025: typed tensor keys, no config or tokenizer; needs `--tokenizer tokenizer.spm`.
    MultiFile,
}

impl SbsFormat {
    pub fn describe(self) -> &'static str {
        match self {
            SbsFormat::SingleFile => "single-file (config and tokenizer embedded)",
            SbsFormat::MultiFile => "pre-2025 multi-file (needs a separate tokenizer.spm)",
        }
    }
}

/// What a BlobStore's directory says about the model in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SbsInfo {
    pub layout: Layout,
    pub format: SbsFormat,
    pub blob_count: u32,
    pub tensor_count: u32,
    /// gemma.cpp's model prefix, e.g. `gemma3-270m` (from the config blob, or from the tensor
    /// keys and the layer count of a pre-2025 file).
    pub family: Option<String>,
    /// The full model specifier when the config blob names it, e.g. `gemma3-270m-sfp-pt`.
    pub specifier: Option<String>,
    /// `f32`, `bf16`, `sfp`, `nuq` (or `i8`).
    pub weight_type: Option<String>,
    /// `Some(true)` for an instruction-tuned (`-it`) file, `Some(false)` for pretrained (`-pt`).
    pub instruct: Option<bool>,
    pub layers: Option<u32>,
    pub has_tokenizer: bool,
    pub file_size: u64,
}

/// Why a file cannot be used as gemma.cpp weights. `Display` is one sentence naming the file and
/// the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbsError {
    Missing {
        path: PathBuf,
    },
    Unreadable {
        path: PathBuf,
        message: String,
    },
    /// No BlobStore magic at either end; `gguf` says the file is a GGUF model instead.
    NotBlobStore {
        path: PathBuf,
        gguf: bool,
    },
    /// A Git LFS pointer stands where the weights should be (`size`: theirs, as it says).
    LfsPointer {
        /// The pointer file.
        path: PathBuf,
        /// The size of the weights it stands for, when it says.
        size: Option<u64>,
    },
    /// The file is shorter than its directory says; `expected_bytes` is 0 when only the missing
    /// end-of-file directory of a V2 file shows it.
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    Malformed {
        path: PathBuf,
        reason: String,
    },
    /// A pre-2025 file was given without its tokenizer.
    NeedsTokenizer {
        path: PathBuf,
    },
    TokenizerMissing {
        path: PathBuf,
        tokenizer: PathBuf,
    },
    /// The weights alone need more memory than the machine has available.
    TooLarge {
        path: PathBuf,
        file_size: u64,
        available: u64,
    },
}

impl SbsError {
    pub fn path(&self) -> &Path {
        match self {
            SbsError::Missing { path }
            | SbsError::Unreadable { path, .. }
            | SbsError::NotBlobStore { path, .. }
            | SbsError::LfsPointer { path, .. }
            | SbsError::Truncated { path, .. }
            | SbsError::Malformed { path, .. }
            | SbsError::NeedsTokenizer { path }
            | SbsError::TokenizerMissing { path, .. }
            | SbsError::TooLarge { path, .. } => path,
        }
    }
}

const RECOPY: &str = "copy or download the whole file again";

impl fmt::Display for SbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SbsError::Missing { path } => write!(f, "weights file {} does not exist: check the path", path.display()),
            SbsError::Unreadable { path, message } => write!(
                f,
                "cannot read weights file {} ({message}): make it readable (`chmod a+r {}`) or check that it is a regular file",
                path.display(),
                path.display()
            ),
            SbsError::NotBlobStore { path, gguf: true } => write!(
                f,
                "{} is a GGUF model file, which gemma.cpp cannot load: run it on gemma-engine (`gemmactl models add NAME {}`) or use gemma.cpp .sbs weights",
                path.display(),
                path.display()
            ),
            SbsError::LfsPointer { path, size } => write!(
                f,
                "{} is a Git LFS pointer, not gemma.cpp weights: {}; run `git lfs pull` in the repository it came from, or download the .sbs file itself",
                path.display(),
                gguf::lfs_what(*size)
            ),
            SbsError::NotBlobStore { path, gguf: false } => write!(
                f,
                "{} is not a gemma.cpp weights file (no BlobStore header \"SBS\\n\" at its start or end): point at the .sbs file of a gemma.cpp download",
                path.display()
            ),
            SbsError::Truncated { path, expected_bytes: 0, actual_bytes } => write!(
                f,
                "{} is a truncated gemma.cpp .sbs file: it starts with a V2 BlobStore header but its {actual_bytes} bytes end without the directory; {RECOPY}",
                path.display()
            ),
            SbsError::Truncated { path, expected_bytes, actual_bytes } => write!(
                f,
                "{} is a truncated gemma.cpp .sbs file: its BlobStore directory says the data ends at byte {expected_bytes} but the file has {actual_bytes} bytes; {RECOPY}",
                path.display()
            ),
            SbsError::Malformed { path, reason } => write!(
                f,
                "{} is not a valid gemma.cpp BlobStore ({reason}): the file is damaged; {RECOPY}",
                path.display()
            ),
            SbsError::NeedsTokenizer { path } => write!(
                f,
                "{} is a pre-2025 multi-file gemma.cpp model with no tokenizer inside: register it with `--tokenizer tokenizer.spm` from the same download, or convert it to the single-file format with gemma.cpp's migrate_weights",
                path.display()
            ),
            SbsError::TokenizerMissing { path, tokenizer } => write!(
                f,
                "tokenizer file {} (for {}) does not exist or cannot be read: check the --tokenizer path",
                tokenizer.display(),
                path.display()
            ),
            SbsError::TooLarge { path, file_size, available } => write!(
                f,
                "{} is {} but only {} of memory is available: close other programs, or use a smaller model or its 8-bit (sfp) weights",
                path.display(),
                super::human_bytes(*file_size),
                super::human_bytes(*available)
            ),
        }
    }
}

impl std::error::Error for SbsError {}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Gguf,
    BlobStore,
    Other,
}

/// Looks at the first four bytes (a V2 BlobStore has its placeholder header there too).
pub fn sniff(path: &Path) -> std::io::Result<Sniffed> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path)?;
    let mut got = 0;
    while got < 4 {
        match file.read(&mut magic[got..])? {
            0 => return Ok(Sniffed::Other),
            n => got += n,
        }
    }
    Ok(match &magic {
        b"GGUF" => Sniffed::Gguf,
        m if u32::from_le_bytes(*m) == MAGIC => Sniffed::BlobStore,
        _ => Sniffed::Other,
    })
}

/// Inspects the `.sbs` file at `path`.
pub fn inspect(path: &Path) -> Result<SbsInfo, SbsError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SbsError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(SbsError::Unreadable {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    };
    if !meta.is_file() {
        return Err(SbsError::Unreadable {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| SbsError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse(std::io::BufReader::new(file), meta.len(), path)
}

/// Checks everything gemma.cpp needs before launch: a readable, complete BlobStore, a tokenizer
/// for pre-2025 files, and memory for the weights.
pub fn preflight(path: &Path, tokenizer: Option<&Path>) -> Result<SbsInfo, SbsError> {
    let info = inspect(path)?;
    match (info.format, tokenizer) {
        (_, Some(t)) => {
            if std::fs::File::open(t).is_err() || !t.is_file() {
                return Err(SbsError::TokenizerMissing {
                    path: path.to_path_buf(),
                    tokenizer: t.to_path_buf(),
                });
            }
        }
        (SbsFormat::MultiFile, None) => {
            return Err(SbsError::NeedsTokenizer {
                path: path.to_path_buf(),
            })
        }
        (SbsFormat::SingleFile, None) => {}
    }
    if let Some(available) = crate::hardware::memory::available() {
        if info.file_size > available {
            return Err(SbsError::TooLarge {
                path: path.to_path_buf(),
                file_size: info.file_size,
                available,
            });
        }
    }
    Ok(info)
}

/// The size a Git LFS pointer file stands for, if the whole file is one.
fn lfs_pointer<R: Read + Seek>(
    reader: &mut R,
    file_size: u64,
) -> std::io::Result<Option<Option<u64>>> {
    if file_size > gguf::LFS_POINTER_MAX_BYTES {
        return Ok(None);
    }
    Ok(gguf::lfs_pointer(&read_at(reader, 0, file_size as usize)?))
}

/// One directory entry.
#[derive(Debug, Clone)]
struct Blob {
    key: String,
    offset: u64,
    size: u64,
}

/// Parses a BlobStore of `file_size` bytes from `reader`; `path` only names the file in errors.
pub fn parse<R: Read + Seek>(
    mut reader: R,
    file_size: u64,
    path: &Path,
) -> Result<SbsInfo, SbsError> {
    let p = || path.to_path_buf();
    let io = |e: std::io::Error| SbsError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if file_size < HEADER_BYTES {
        return Err(
            if file_size >= 4 && read_at(&mut reader, 0, 4).map_err(io)? == b"GGUF" {
                SbsError::NotBlobStore {
                    path: p(),
                    gguf: true,
                }
            } else {
                SbsError::NotBlobStore {
                    path: p(),
                    gguf: false,
                }
            },
        );
    }
    let head = read_at(&mut reader, 0, HEADER_BYTES as usize).map_err(io)?;
    let (magic, count, bytes) = header(&head);
    let (layout, count, dir_start, data_limit) = if magic == MAGIC && count != 0 {
        // V1: directory right after the header, blobs anywhere after it.
        if bytes > file_size {
            return Err(SbsError::Truncated {
                path: p(),
                expected_bytes: bytes,
                actual_bytes: file_size,
            });
        }
        (Layout::V1, count, HEADER_BYTES, file_size)
    } else {
        let tail =
            read_at(&mut reader, file_size - HEADER_BYTES, HEADER_BYTES as usize).map_err(io)?;
        let (tail_magic, tail_count, tail_bytes) = header(&tail);
        if tail_magic != MAGIC {
            return Err(if magic == MAGIC {
                // The placeholder header of a V2 file, whose end is missing.
                SbsError::Truncated {
                    path: p(),
                    expected_bytes: 0,
                    actual_bytes: file_size,
                }
            } else if let Some(size) = lfs_pointer(&mut reader, file_size).map_err(io)? {
                SbsError::LfsPointer { path: p(), size }
            } else {
                SbsError::NotBlobStore {
                    path: p(),
                    gguf: &head[..4] == b"GGUF",
                }
            });
        }
        if tail_bytes != file_size {
            return Err(SbsError::Truncated {
                path: p(),
                expected_bytes: tail_bytes.max(file_size + 1),
                actual_bytes: file_size,
            });
        }
        if tail_count == 0 {
            return Err(SbsError::Malformed {
                path: p(),
                reason: "its directory lists no blobs".into(),
            });
        }
        let dir_bytes = directory_bytes(tail_count, path)?;
        let Some(start) = (file_size - HEADER_BYTES).checked_sub(dir_bytes) else {
            return Err(SbsError::Malformed {
                path: p(),
                reason: format!("a directory of {tail_count} blobs does not fit in the file"),
            });
        };
        (Layout::V2, tail_count, start, start)
    };
    let dir_bytes = directory_bytes(count, path)?;
    if layout == Layout::V1 && dir_start + dir_bytes > file_size {
        return Err(SbsError::Truncated {
            path: p(),
            expected_bytes: dir_start + dir_bytes,
            actual_bytes: file_size,
        });
    }
    // Bounded by MAX_BLOBS × 32 bytes (512 KiB).
    let dir = read_at(&mut reader, dir_start, dir_bytes as usize).map_err(io)?;
    let n = count as usize;
    let mut blobs = Vec::with_capacity(n);
    let mut end = 0u64;
    for i in 0..n {
        let key_bytes = &dir[i * 16..i * 16 + 16];
        let len = key_bytes.iter().position(|b| *b == 0).unwrap_or(16);
        let key = &key_bytes[..len];
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic()) {
            return Err(SbsError::Malformed {
                path: p(),
                reason: format!("blob {i} has no readable key"),
            });
        }
        let pair = n * 16 + i * 16;
        let offset = u64::from_le_bytes(dir[pair..pair + 8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(dir[pair + 8..pair + 16].try_into().unwrap_or_default());
        let Some(blob_end) = offset.checked_add(size) else {
            return Err(SbsError::Malformed {
                path: p(),
                reason: format!(
                    "blob {} has an impossible size",
                    String::from_utf8_lossy(key)
                ),
            });
        };
        end = end.max(blob_end);
        blobs.push(Blob {
            key: String::from_utf8_lossy(key).into_owned(),
            offset,
            size,
        });
    }
    if end > data_limit {
        return Err(match layout {
            Layout::V1 => SbsError::Truncated {
                path: p(),
                expected_bytes: end,
                actual_bytes: file_size,
            },
            Layout::V2 => SbsError::Malformed {
                path: p(),
                reason: "a blob overlaps the directory at the end of the file".into(),
            },
        });
    }
    let mut info = describe(&blobs, layout, file_size);
    if let Some(config) = blobs.iter().find(|b| b.key == "config") {
        let take = config.size.min(CONFIG_SCAN_BYTES);
        let bytes = read_at(&mut reader, config.offset, take as usize).map_err(io)?;
        apply_config(&mut info, &bytes);
    }
    Ok(info)
}

fn header(bytes: &[u8]) -> (u32, u32, u64) {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let bytes_field = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    (word(0), word(4), bytes_field)
}

fn directory_bytes(count: u32, path: &Path) -> Result<u64, SbsError> {
    if count > MAX_BLOBS {
        return Err(SbsError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "its header claims {count} blobs, more than gemma.cpp's limit of {MAX_BLOBS}"
            ),
        });
    }
    Ok(count as u64 * 32)
}

/// Reads exactly `len` bytes at `offset`; callers bound `len`.
fn read_at<R: Read + Seek>(reader: &mut R, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf)?;
    Ok(buf)
}

const META_KEYS: [&str; 4] = ["config", "tokenizer", "toc", "scales"];

/// Format, tensor count, layers, family and weight type from the keys alone.
fn describe(blobs: &[Blob], layout: Layout, file_size: u64) -> SbsInfo {
    let single = blobs.iter().any(|b| b.key == "config");
    let tensors: Vec<&Blob> = blobs
        .iter()
        .filter(|b| !META_KEYS.contains(&b.key.as_str()))
        .collect();
    // Pre-2025 keys carry a one-character type prefix.
    let name = |b: &Blob| -> String {
        if single {
            b.key.clone()
        } else {
            b.key.chars().skip(1).collect()
        }
    };
    let layers = tensors
        .iter()
        .filter_map(|b| {
            name(b)
                .rsplit_once('_')
                .and_then(|(_, i)| i.parse::<u32>().ok())
        })
        .max()
        .map(|i| i.saturating_add(1));
    let has = |base: &str| tensors.iter().any(|b| name(b).starts_with(base));
    let generation = if has("key_norm_") || has("query_norm_") {
        Some("gemma3")
    } else if has("post_att_ns_") {
        Some("gemma2")
    } else {
        None
    };
    let family = generation.map(|g| match (g, layers) {
        ("gemma3", Some(18)) => "gemma3-270m".to_string(),
        ("gemma3", Some(26)) => "gemma3-1b".to_string(),
        ("gemma3", Some(34)) => "gemma3-4b".to_string(),
        ("gemma3", Some(48)) => "gemma3-12b".to_string(),
        ("gemma3", Some(62)) => "gemma3-27b".to_string(),
        ("gemma2", Some(26)) => "gemma2-2b".to_string(),
        ("gemma2", Some(42)) => "gemma2-9b".to_string(),
        ("gemma2", Some(46)) => "gemma2-27b".to_string(),
        (g, _) => g.to_string(),
    });
    let weight_type = if single {
        None
    } else {
        // The type of the largest tensor (the embedding) is the file's weight type.
        tensors
            .iter()
            .max_by_key(|b| b.size)
            .and_then(|b| match b.key.chars().next() {
                Some('F') => Some("f32"),
                Some('B') => Some("bf16"),
                Some('$') => Some("sfp"),
                Some('2') => Some("nuq"),
                Some('I') => Some("i8"),
                _ => None,
            })
    };
    SbsInfo {
        layout,
        format: if single {
            SbsFormat::SingleFile
        } else {
            SbsFormat::MultiFile
        },
        blob_count: blobs.len() as u32,
        tensor_count: tensors.len() as u32,
        family,
        specifier: None,
        weight_type: weight_type.map(str::to_string),
        instruct: None,
        layers,
        has_tokenizer: blobs.iter().any(|b| b.key == "tokenizer" && b.size > 0),
        file_size,
    }
}

/// gemma.cpp's model prefixes, longest first so `gemma3-27b` is not read as `gemma3-2...`.
const PREFIXES: [&str; 12] = [
    "paligemma2-10b-224",
    "paligemma2-10b-448",
    "paligemma2-3b-224",
    "paligemma2-3b-448",
    "gemma3-270m",
    "gemma2-27b",
    "gemma3-12b",
    "gemma3-27b",
    "gemma2-2b",
    "gemma2-9b",
    "gemma3-1b",
    "gemma3-4b",
];
const TYPES: [&str; 4] = ["bf16", "f32", "sfp", "nuq"];

/// The config blob is a stream of u32 fields whose strings (display name, specifier) are stored
/// as bytes; searching it for a specifier does not depend on the field order, which changes
/// between gemma.cpp versions.
fn apply_config(info: &mut SbsInfo, config: &[u8]) {
    let mut best: Option<(String, Option<&str>, Option<bool>)> = None;
    for prefix in PREFIXES {
        let mut from = 0;
        while let Some(at) = find(&config[from..], prefix.as_bytes()).map(|i| i + from) {
            from = at + 1;
            let rest = &config[at + prefix.len()..];
            let ty = TYPES.iter().copied().find(|t| {
                rest.len() > t.len() && rest[0] == b'-' && rest[1..].starts_with(t.as_bytes())
            });
            let instruct = ty.and_then(|t| {
                let after = &rest[1 + t.len()..];
                if after.starts_with(b"-it") {
                    Some(true)
                } else if after.starts_with(b"-pt") {
                    Some(false)
                } else {
                    None
                }
            });
            let better = match &best {
                None => true,
                Some((_, bt, bi)) => {
                    (ty.is_some() && bt.is_none()) || (instruct.is_some() && bi.is_none())
                }
            };
            if better {
                best = Some((prefix.to_string(), ty, instruct));
            }
        }
        if best
            .as_ref()
            .is_some_and(|(_, t, i)| t.is_some() && i.is_some())
        {
            break;
        }
    }
    if let Some((prefix, ty, instruct)) = best {
        info.specifier = ty.map(|t| match instruct {
            Some(true) => format!("{prefix}-{t}-it"),
            Some(false) => format!("{prefix}-{t}-pt"),
            None => format!("{prefix}-{t}"),
        });
        info.family = Some(prefix);
        if ty.is_some() {
            info.weight_type = ty.map(str::to_string);
        }
        info.instruct = instruct;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes small synthetic BlobStores for tests (here and in `tests/`).
pub mod test_writer {
    use super::MAGIC;

    /// Builds a BlobStore holding `blobs` (key, bytes) in the V1 or V2 layout.
    pub fn build(blobs: &[(&str, Vec<u8>)], v2: bool) -> Vec<u8> {
        let n = blobs.len();
        let dir_bytes = 32 * n;
        let align = |x: usize| x.div_ceil(256) * 256;
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        let mut pos = if v2 { 256 } else { align(16 + dir_bytes) };
        for (_, data) in blobs {
            offsets.push(pos);
            pos = align(pos + data.len());
        }
        let data_end = pos;
        let directory = |out: &mut Vec<u8>| {
            for (key, _) in blobs {
                let mut k = [0u8; 16];
                k[..key.len().min(16)].copy_from_slice(&key.as_bytes()[..key.len().min(16)]);
                out.extend_from_slice(&k);
            }
            for (i, (_, data)) in blobs.iter().enumerate() {
                out.extend_from_slice(&(offsets[i] as u64).to_le_bytes());
                out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            }
        };
        let total = if v2 {
            (data_end + dir_bytes + 16).div_ceil(65536) * 65536
        } else {
            data_end
        };
        out.extend_from_slice(&MAGIC.to_le_bytes());
        if v2 {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&65536u64.to_le_bytes());
        } else {
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&(total as u64).to_le_bytes());
            directory(&mut out);
        }
        for (i, (_, data)) in blobs.iter().enumerate() {
            out.resize(offsets[i], 0);
            out.extend_from_slice(data);
        }
        out.resize(data_end, 0);
        if v2 {
            out.resize(total - dir_bytes - 16, 0);
            directory(&mut out);
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&(total as u64).to_le_bytes());
        }
        out
    }

    /// The tensor keys of an `layers`-layer Gemma 3, with `prefix` before each (pre-2025 type).
    pub fn gemma3_keys(layers: u32, prefix: &str) -> Vec<String> {
        let mut keys = vec![
            format!("{prefix}c_embedding"),
            format!("{prefix}c_final_norm"),
        ];
        for i in 0..layers {
            for base in [
                "qkv_ein",
                "att_ein",
                "gating_ein",
                "linear_w",
                "pre_att_ns",
                "post_att_ns",
                "pre_ff_ns",
                "post_ff_ns",
                "query_norm",
                "key_norm",
            ] {
                keys.push(format!("{prefix}{base}_{i}"));
            }
        }
        keys
    }

    /// A config blob naming `specifier` the way gemma.cpp stores strings: a u32 length, then
    /// the bytes padded to whole u32 words, among other u32 fields.
    pub fn config(specifier: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [1u32, 3, 18, 640] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&(specifier.len() as u32).to_le_bytes());
        out.extend_from_slice(specifier.as_bytes());
        out.resize(out.len().div_ceil(4) * 4, 0);
        out.extend_from_slice(&262144u32.to_le_bytes());
        out
    }

    /// A whole single-file (2025) model: config, tokenizer, toc and an 18-layer Gemma 3's tensors.
    pub fn single_file(specifier: &str, v2: bool) -> Vec<u8> {
        let mut blobs: Vec<(String, Vec<u8>)> = vec![
            ("config".into(), config(specifier)),
            (
                "tokenizer".into(),
                b"\x0a\x05stand-in sentencepiece".to_vec(),
            ),
            ("toc".into(), vec![7u8; 64]),
        ];
        for key in gemma3_keys(18, "") {
            blobs.push((key, vec![1u8; 40]));
        }
        let refs: Vec<(&str, Vec<u8>)> =
            blobs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        build(&refs, v2)
    }

    /// A pre-2025 multi-file model with sfp (`$`) tensors.
    pub fn multi_file(layers: u32) -> Vec<u8> {
        let keys = gemma3_keys(layers, "$");
        let blobs: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                (
                    k.as_str(),
                    if k.ends_with("c_embedding") {
                        vec![2u8; 300]
                    } else {
                        vec![3u8; 20]
                    },
                )
            })
            .collect();
        build(&blobs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::*;
    use super::*;
    use proptest::prelude::*;

    fn parse_bytes(bytes: &[u8]) -> Result<SbsInfo, SbsError> {
        parse(
            std::io::Cursor::new(bytes),
            bytes.len() as u64,
            Path::new("w.sbs"),
        )
    }

    #[test]
    fn reads_single_file_models_in_both_layouts() {
        for v2 in [false, true] {
            let bytes = single_file("gemma3-270m-sfp-it", v2);
            let info = parse_bytes(&bytes).unwrap();
            assert_eq!(info.layout, if v2 { Layout::V2 } else { Layout::V1 });
            assert_eq!(info.format, SbsFormat::SingleFile);
            assert_eq!(info.blob_count, 3 + 2 + 180);
            assert_eq!(info.tensor_count, 182);
            assert_eq!(info.family.as_deref(), Some("gemma3-270m"));
            assert_eq!(info.specifier.as_deref(), Some("gemma3-270m-sfp-it"));
            assert_eq!(info.weight_type.as_deref(), Some("sfp"));
            assert_eq!(info.instruct, Some(true));
            assert_eq!(info.layers, Some(18));
            assert!(info.has_tokenizer);
            if v2 {
                assert_eq!(bytes.len() % 65536, 0);
            }
        }
    }

    #[test]
    fn reads_pre_2025_multi_file_models_from_their_keys() {
        let info = parse_bytes(&multi_file(26)).unwrap();
        assert_eq!(info.format, SbsFormat::MultiFile);
        assert_eq!(info.family.as_deref(), Some("gemma3-1b"));
        assert_eq!(info.weight_type.as_deref(), Some("sfp"));
        assert_eq!(info.tensor_count, 262);
        assert!(!info.has_tokenizer);
        assert_eq!(info.specifier, None);
    }

    #[test]
    fn bad_files_get_one_sentence_each() {
        let err = parse_bytes(b"hello, this is only text\n").unwrap_err();
        assert!(
            matches!(err, SbsError::NotBlobStore { gguf: false, .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("w.sbs is not a gemma.cpp weights file"));
        let err = parse_bytes(b"GGUF\x03\0\0\0 and then some more bytes").unwrap_err();
        assert!(
            err.to_string()
                .contains("is a GGUF model file, which gemma.cpp cannot load"),
            "{err}"
        );

        let v1 = single_file("gemma3-270m-sfp-it", false);
        let err = parse_bytes(&v1[..v1.len() / 2]).unwrap_err();
        assert!(matches!(err, SbsError::Truncated { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("is a truncated gemma.cpp .sbs file"),
            "{err}"
        );
        let v2 = single_file("gemma3-270m-sfp-it", true);
        let err = parse_bytes(&v2[..v2.len() - 4096]).unwrap_err();
        assert!(
            err.to_string().contains("end without the directory"),
            "{err}"
        );

        let mut huge = v1.clone();
        huge[4..8].copy_from_slice(&(MAX_BLOBS + 1).to_le_bytes());
        assert!(parse_bytes(&huge)
            .unwrap_err()
            .to_string()
            .contains("more than gemma.cpp's limit"));
    }

    #[test]
    fn preflight_demands_a_tokenizer_for_pre_2025_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("2b-it-sfp.sbs");
        std::fs::write(&file, multi_file(18)).unwrap();
        let err = preflight(&file, None).unwrap_err().to_string();
        assert!(
            err.contains("2b-it-sfp.sbs is a pre-2025") && err.contains("--tokenizer"),
            "{err}"
        );
        let err = preflight(&file, Some(&dir.path().join("nope.spm")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.spm") && err.contains("does not exist"),
            "{err}"
        );
        let spm = dir.path().join("tokenizer.spm");
        std::fs::write(&spm, b"spm").unwrap();
        assert_eq!(
            preflight(&file, Some(&spm)).unwrap().family.as_deref(),
            Some("gemma3-270m")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), v2 in any::<bool>()) {
            let _ = parse_bytes(&bytes);
            // Behind a valid magic at either end, the count and size fields get exercised.
            let mut front = MAGIC.to_le_bytes().to_vec();
            front.extend_from_slice(&bytes);
            let _ = parse_bytes(&front);
            if v2 && bytes.len() >= 16 {
                let mut back = bytes.clone();
                let n = back.len();
                back[n - 16..n - 12].copy_from_slice(&MAGIC.to_le_bytes());
                back[n - 8..].copy_from_slice(&(n as u64).to_le_bytes());
                let _ = parse_bytes(&back);
            }
        }

        #[test]
        fn mutated_stores_never_panic(
            v2 in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            words in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..3),
            cut in any::<prop::sample::Index>(),
            do_cut in any::<bool>(),
        ) {
            let mut bytes = single_file("gemma3-1b-bf16-pt", v2);
            // Edits near the header and directory matter most; aim half of them there.
            let dir_zone = if v2 { bytes.len() - 8192 } else { 0 };
            for (k, (at, value)) in edits.into_iter().enumerate() {
                let i = if k % 2 == 0 { dir_zone + at.index(8192) } else { at.index(bytes.len()) };
                bytes[i] = value;
            }
            for (at, value) in words {
                let i = if v2 { bytes.len() - 8 - at.index(8192) } else { at.index(8192) };
                bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
            if do_cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            match parse_bytes(&bytes) {
                Ok(info) => prop_assert!(info.blob_count <= MAX_BLOBS && info.file_size == bytes.len() as u64),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn a_git_lfs_pointer_is_named_with_the_fix() {
        let pointer = "version https://git-lfs.example/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 536870912\n";
        let err = parse(
            std::io::Cursor::new(pointer.as_bytes()),
            pointer.len() as u64,
            Path::new("/w/gemma.sbs"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SbsError::LfsPointer {
                path: "/w/gemma.sbs".into(),
                size: Some(536870912)
            }
        );
        assert!(err.to_string().contains("git lfs pull"), "{err}");
    }
}
