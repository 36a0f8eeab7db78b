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
//! Beyond the directory, a single-file model's `config` blob (gemma.cpp's serialized
//! `ModelConfig`, `sbs/config.rs`) and `toc` blob (its table of tensors, `sbs/toc.rs`) are decoded
//! and checked against each other and against the directory (`sbs/tensors.rs`), so every damage
//! gemma.cpp would abort on is refused here first, naming the blob and the field. The directory
//! itself is checked the way gemma.cpp checks it: blobs back to back on 256-byte boundaries.
//!
//! The reader never trusts a size from the file before checking it against the file's length and
//! a fixed cap, so no input makes it panic or allocate more than a few MiB (the property tests
//! below feed it arbitrary and mutated bytes).

pub use ::sbs::{config, fields, tensors, toc, writer};

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The BlobStore magic, `SBS\n` read as a little-endian u32.
pub const MAGIC: u32 = 0x0A53_4253;
/// gemma.cpp refuses more blobs than this.
pub const MAX_BLOBS: u32 = 16384;
const HEADER_BYTES: u64 = 16;
/// Blobs start on these boundaries; a V2 file's first blob follows its 256-byte placeholder.
const BLOB_ALIGN: u64 = 256;
/// gemma.cpp's writer makes V2 files a multiple of this long.
const END_ALIGN: u64 = 64 << 10;
/// Largest `config` and `toc` blobs read (real ones take a few KiB; 16384 tensors' records fit).
const CONFIG_MAX_BYTES: u64 = 1 << 20;
const TOC_MAX_BYTES: u64 = 16 << 20;

/// Where the directory sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Header and directory at the start of the file.
    V1,
    /// A placeholder header at the start; the directory and the real header at the end.
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
    /// The format in a few words, for `models` output.
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
    /// Where the directory sits.
    pub layout: Layout,
    /// Single-file (2025 and later) or pre-2025 multi-file.
    pub format: SbsFormat,
    /// Number of blobs in the directory.
    pub blob_count: u32,
    /// Number of tensors: the `toc` blob's records, or for a pre-2025 file the blobs other than
    /// `config`, `tokenizer`, `toc` and `scales`.
    pub tensor_count: u32,
    /// gemma.cpp's model prefix, e.g. `gemma3-270m` (from the config blob, or from the tensor
    /// keys and the layer count of a pre-2025 file).
    pub family: Option<String>,
    /// The full model specifier when the config blob names it, e.g. `gemma3-270m-sfp-pt`.
    pub specifier: Option<String>,
    /// `f32`, `bf16`, `sfp`, `nuq` (or `i8`).
    pub weight_type: Option<String>,
    /// Whether gemma.cpp wraps prompts in Gemma's chat template: the config's prompt wrapping
    /// (`-it`, `-vlm`, `-pg`: yes; `-pt`: no). `None` for pre-2025 files, which do not say.
    pub instruct: Option<bool>,
    /// Number of transformer layers: the config's `num_layers`, or for a pre-2025 file one more
    /// than the highest layer index in the tensor keys.
    pub layers: Option<u32>,
    /// Whether a non-empty `tokenizer` blob is inside.
    pub has_tokenizer: bool,
    /// The file's length in bytes.
    pub file_size: u64,
    /// From the config blob: gemma.cpp's display name (e.g. `Gemma3_270M`), sizes, wrapping.
    pub display_name: Option<String>,
    /// The config's `model_dim`: the width of a token's embedding.
    pub model_dim: Option<u32>,
    /// The config's `vocab_size`: tokens in the vocabulary.
    pub vocab_size: Option<u32>,
    /// The config's `max_seq_len`: the longest context, in tokens.
    pub max_seq_len: Option<u32>,
    /// The prompt wrapping in words, e.g. "none (pretrained base model)".
    pub wrapping: Option<String>,
    /// Set when the config was written by another gemma.cpp version (fields missing or extra).
    pub config_note: Option<String>,
}

/// Why a file cannot be used as gemma.cpp weights. `Display` is one sentence naming the file and
/// the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbsError {
    /// The file does not exist.
    Missing {
        /// The weights file.
        path: PathBuf,
    },
    /// The file cannot be opened or read, or is not a regular file.
    Unreadable {
        /// The weights file.
        path: PathBuf,
        /// Why it cannot be read (the I/O error's text).
        message: String,
    },
    /// No BlobStore magic at either end; `gguf` says the file is a GGUF model instead.
    NotBlobStore {
        /// The file given as weights.
        path: PathBuf,
        /// Whether the file starts with the GGUF magic.
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
        /// The weights file.
        path: PathBuf,
        /// Where the directory says the data ends, in bytes (0: unknown).
        expected_bytes: u64,
        /// The file's length in bytes.
        actual_bytes: u64,
    },
    /// The BlobStore header is invalid, e.g. it claims more blobs than gemma.cpp allows.
    Malformed {
        /// The weights file.
        path: PathBuf,
        /// What is wrong, as a phrase (shown in parentheses).
        reason: String,
    },
    /// A full-length file with damage in one part: `part` names it (e.g. "table of tensors (toc
    /// blob)"), `reason` says what is wrong with it, as a clause.
    Damaged {
        /// The weights file.
        path: PathBuf,
        /// The damaged part.
        part: &'static str,
        /// What is wrong with the part, as a clause.
        reason: String,
    },
    /// A pre-2025 file was given without its tokenizer.
    NeedsTokenizer {
        /// The weights file.
        path: PathBuf,
    },
    /// The tokenizer file given with the weights does not exist or cannot be read.
    TokenizerMissing {
        /// The weights file.
        path: PathBuf,
        /// The tokenizer file given.
        tokenizer: PathBuf,
    },
    /// The weights alone need more memory than the machine has available.
    TooLarge {
        /// The weights file.
        path: PathBuf,
        /// The weights file's size in bytes.
        file_size: u64,
        /// Memory available, in bytes.
        available: u64,
    },
}

impl SbsError {
    /// The weights file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SbsError::Missing { path }
            | SbsError::Unreadable { path, .. }
            | SbsError::NotBlobStore { path, .. }
            | SbsError::LfsPointer { path, .. }
            | SbsError::Truncated { path, .. }
            | SbsError::Malformed { path, .. }
            | SbsError::Damaged { path, .. }
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
                "{} is a truncated gemma.cpp .sbs file: it starts with a V2 BlobStore header but its {actual_bytes} bytes end without the directory (cut short, or its end is damaged); {RECOPY}",
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
            SbsError::Damaged { path, part, reason } => write!(
                f,
                "{} is a damaged gemma.cpp .sbs file: its {part} {reason}; {RECOPY}",
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
    /// A GGUF model file (`GGUF` magic).
    Gguf,
    /// A gemma.cpp BlobStore (`SBS\n` magic).
    BlobStore,
    /// Anything else, including a file shorter than four bytes.
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

const HEADER_PART: &str = "trailing BlobStore header";
const LEADING_PART: &str = "leading BlobStore header";
const DIRECTORY_PART: &str = "blob directory";
const CONFIG_PART: &str = "model config (config blob)";
const TOC_PART: &str = "table of tensors (toc blob)";

/// The reader, the file's size and its name for errors.
struct Source<'p, R> {
    reader: R,
    file_size: u64,
    path: &'p Path,
}

impl<R: Read + Seek> Source<'_, R> {
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SbsError> {
        read_at(&mut self.reader, offset, len).map_err(|e| SbsError::Unreadable {
            path: self.path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn damaged(&self, part: &'static str, reason: String) -> SbsError {
        SbsError::Damaged {
            path: self.path.to_path_buf(),
            part,
            reason,
        }
    }
}

/// Parses a BlobStore of `file_size` bytes from `reader`; `path` only names the file in errors.
pub fn parse<R: Read + Seek>(reader: R, file_size: u64, path: &Path) -> Result<SbsInfo, SbsError> {
    let mut src = Source {
        reader,
        file_size,
        path,
    };
    if file_size < HEADER_BYTES {
        let gguf = file_size >= 4 && src.read(0, 4)? == b"GGUF";
        return Err(SbsError::NotBlobStore {
            path: path.to_path_buf(),
            gguf,
        });
    }
    let head = src.read(0, HEADER_BYTES as usize)?;
    let (magic, count, bytes) = header(&head);
    // Like gemma.cpp: a front header with blobs is V1; one claiming more blobs than allowed is
    // skipped for the end of the file (so is a V2 placeholder, which says 0).
    let (layout, blobs) = if magic == MAGIC && count != 0 && count <= MAX_BLOBS {
        match v1(&mut src, count, bytes) {
            Ok(blobs) => (Layout::V1, blobs),
            Err(e) => {
                // gemma.cpp reads the front header first too, and refuses the file on it.
                if !matches!(e, SbsError::Unreadable { .. }) && v2(&mut src, true, &head).is_ok() {
                    return Err(src.damaged(
                        LEADING_PART,
                        format!("says the file holds {count} blobs where a file with its directory at the end says 0"),
                    ));
                }
                return Err(e);
            }
        }
    } else {
        match v2(&mut src, magic == MAGIC, &head) {
            Ok(blobs) => (Layout::V2, blobs),
            // Neither end reads: a V1 file whose front header claims too many blobs.
            Err(e)
                if magic == MAGIC
                    && count > MAX_BLOBS
                    && !matches!(e, SbsError::Unreadable { .. }) =>
            {
                return Err(src.damaged(
                    LEADING_PART,
                    format!("claims {count} blobs, more than gemma.cpp's limit of {MAX_BLOBS}"),
                ))
            }
            Err(e) => return Err(e),
        }
    };
    let mut info = describe(&blobs, layout, file_size);
    check_single_file(&mut src, &blobs, &mut info)?;
    Ok(info)
}

/// The V1 layout: header and directory at the front.
fn v1<R: Read + Seek>(src: &mut Source<R>, count: u32, bytes: u64) -> Result<Vec<Blob>, SbsError> {
    let dir_bytes = directory_bytes(count, src.path)?;
    if bytes > src.file_size || HEADER_BYTES + dir_bytes > src.file_size {
        return Err(SbsError::Truncated {
            path: src.path.to_path_buf(),
            expected_bytes: bytes.max(HEADER_BYTES + dir_bytes),
            actual_bytes: src.file_size,
        });
    }
    if bytes != src.file_size {
        return Err(src.damaged(
            LEADING_PART,
            format!(
                "records a file size of {bytes} bytes, but the file has {}",
                src.file_size
            ),
        ));
    }
    // Bounded by MAX_BLOBS × 32 bytes (512 KiB).
    let dir = src.read(HEADER_BYTES, dir_bytes as usize)?;
    let first = (HEADER_BYTES + dir_bytes).div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
    match directory(&dir, count as usize, first, src.file_size) {
        Ok(blobs) => Ok(blobs),
        Err(DirFault::PastEnd { end, .. }) => Err(SbsError::Truncated {
            path: src.path.to_path_buf(),
            expected_bytes: end,
            actual_bytes: src.file_size,
        }),
        Err(DirFault::Bad(reason)) => Err(src.damaged(DIRECTORY_PART, reason)),
    }
}

/// The V2 layout: the directory and the real header at the end. `placeholder` says whether the
/// file starts with a BlobStore header (as a V2 file does), which tells a cut-short file from
/// something that is no BlobStore at all.
fn v2<R: Read + Seek>(
    src: &mut Source<R>,
    placeholder: bool,
    head: &[u8],
) -> Result<Vec<Blob>, SbsError> {
    let size = src.file_size;
    let tail = src.read(size - HEADER_BYTES, HEADER_BYTES as usize)?;
    let (magic, count, bytes) = header(&tail);
    if magic != MAGIC {
        // The end is not a header: a damaged header after an intact directory, a file cut
        // short, or no BlobStore at all. gemma.cpp's writer pads V2 files to a multiple of
        // 64 KiB, and a directory found before the last 16 bytes of such a file is its own (a
        // file cut inside its directory can show a shorter one that reads back to back).
        if size.is_multiple_of(END_ALIGN) && find_directory(src)?.is_some() {
            return Err(src.damaged(
                HEADER_PART,
                format!(
                    "does not start with the BlobStore magic \"SBS\\n\" (it has {:02x} {:02x} {:02x} {:02x}); the blob directory before it is intact",
                    tail[0], tail[1], tail[2], tail[3]
                ),
            ));
        }
        return Err(if placeholder {
            SbsError::Truncated {
                path: src.path.to_path_buf(),
                expected_bytes: 0,
                actual_bytes: size,
            }
        } else if let Some(size) =
            lfs_pointer(&mut src.reader, size).map_err(|e| SbsError::Unreadable {
                path: src.path.to_path_buf(),
                message: e.to_string(),
            })?
        {
            SbsError::LfsPointer {
                path: src.path.to_path_buf(),
                size,
            }
        } else {
            SbsError::NotBlobStore {
                path: src.path.to_path_buf(),
                gguf: &head[..4] == b"GGUF",
            }
        });
    }
    // The header ends the file, so the file is whole: a wrong size or count in it is damage.
    if bytes != size {
        return Err(src.damaged(
            HEADER_PART,
            format!("records a file size of {bytes} bytes, but the file has {size} bytes and ends with that header"),
        ));
    }
    let fits = count != 0
        && count <= MAX_BLOBS
        && (count as u64) * 32 + HEADER_BYTES <= size.saturating_sub(BLOB_ALIGN);
    if fits {
        let dir_start = size - HEADER_BYTES - count as u64 * 32;
        let dir = src.read(dir_start, count as usize * 32)?;
        match directory(&dir, count as usize, BLOB_ALIGN, dir_start) {
            Ok(blobs) => return Ok(blobs),
            Err(fault) => {
                if let Some((n, _)) = find_directory(src)?.filter(|(n, _)| *n != count as usize) {
                    return Err(src.damaged(
                        HEADER_PART,
                        format!("says the file holds {count} blobs, but the directory before it lists {n}"),
                    ));
                }
                let reason = match fault {
                    DirFault::Bad(r) => r,
                    DirFault::PastEnd { key, size, .. } => format!(
                        "gives blob {key} {size} bytes, which would run into the directory at the end of the file"
                    ),
                };
                return Err(src.damaged(DIRECTORY_PART, reason));
            }
        }
    }
    if let Some((n, _)) = find_directory(src)? {
        return Err(src.damaged(
            HEADER_PART,
            format!("says the file holds {count} blobs, but the directory before it lists {n}"),
        ));
    }
    Err(src.damaged(
        HEADER_PART,
        if count == 0 {
            "says the file holds no blobs".to_string()
        } else {
            format!("says the file holds {count} blobs, more than gemma.cpp's limit of {MAX_BLOBS} or than fit in the file")
        },
    ))
}

/// Looks for an intact V2 directory just before the last 16 bytes, whatever the header there
/// says: the blob count whose directory reads back to back from byte 256.
fn find_directory<R: Read + Seek>(
    src: &mut Source<R>,
) -> Result<Option<(usize, Vec<Blob>)>, SbsError> {
    let size = src.file_size;
    let span = (MAX_BLOBS as u64 * 32).min(size.saturating_sub(HEADER_BYTES + BLOB_ALIGN));
    let buf = src.read(size - HEADER_BYTES - span, span as usize)?;
    for n in 1..=(span / 32) as usize {
        let dir = &buf[buf.len() - 32 * n..];
        // Quick filter: a printable first key and a first blob at byte 256.
        let first_offset =
            u64::from_le_bytes(dir[16 * n..16 * n + 8].try_into().unwrap_or_default());
        if first_offset != BLOB_ALIGN || !dir[0].is_ascii_graphic() {
            continue;
        }
        let dir_start = size - HEADER_BYTES - 32 * n as u64;
        if let Ok(blobs) = directory(dir, n, BLOB_ALIGN, dir_start) {
            return Ok(Some((n, blobs)));
        }
    }
    Ok(None)
}

enum DirFault {
    /// Blob `key` of `size` bytes ends past the limit, at byte `end`.
    PastEnd {
        key: String,
        size: u64,
        end: u64,
    },
    Bad(String),
}

/// Reads `n` keys and ranges; blobs must lie back to back from `first` on 256-byte boundaries
/// (gemma.cpp checks exactly this) and end by `limit`.
fn directory(dir: &[u8], n: usize, first: u64, limit: u64) -> Result<Vec<Blob>, DirFault> {
    let mut blobs: Vec<Blob> = Vec::with_capacity(n);
    let mut expected = first;
    let mut keys = std::collections::HashSet::new();
    for i in 0..n {
        let key_bytes = &dir[i * 16..i * 16 + 16];
        let len = key_bytes.iter().position(|b| *b == 0).unwrap_or(16);
        let key = &key_bytes[..len];
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_graphic()) {
            return Err(DirFault::Bad(format!("has no readable key for blob {i}")));
        }
        let key = String::from_utf8_lossy(key).into_owned();
        let pair = n * 16 + i * 16;
        let offset = u64::from_le_bytes(dir[pair..pair + 8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(dir[pair + 8..pair + 16].try_into().unwrap_or_default());
        if !keys.insert(key.clone()) {
            return Err(DirFault::Bad(format!("lists blob {key} twice")));
        }
        if size == 0 {
            return Err(DirFault::Bad(format!("gives blob {key} no bytes")));
        }
        if offset != expected {
            return Err(DirFault::Bad(match blobs.last() {
                Some(prev) => format!(
                    "puts blob {key} at byte {offset}, but the blob before it ({}) ends at byte {expected}",
                    prev.key
                ),
                None => format!("puts the first blob ({key}) at byte {offset} instead of {expected}"),
            }));
        }
        let Some(end) = offset.checked_add(size) else {
            return Err(DirFault::Bad(format!(
                "gives blob {key} an impossible size of {size} bytes"
            )));
        };
        if end > limit {
            return Err(DirFault::PastEnd { key, size, end });
        }
        expected = end.div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        blobs.push(Blob { key, offset, size });
    }
    Ok(blobs)
}

/// Decodes and cross-checks the config and toc blobs of a single-file model, and fills in what
/// the config says.
fn check_single_file<R: Read + Seek>(
    src: &mut Source<R>,
    blobs: &[Blob],
    info: &mut SbsInfo,
) -> Result<(), SbsError> {
    let find = |key: &str| blobs.iter().find(|b| b.key == key);
    let (config_blob, toc_blob) = match (find("config"), find("toc")) {
        (None, None) => return Ok(()),
        (Some(c), Some(t)) => (c.clone(), t.clone()),
        (Some(_), None) => {
            return Err(src.damaged(
                DIRECTORY_PART,
                "lists a config blob but no toc blob (the table of tensors every single-file model has)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(src.damaged(
                DIRECTORY_PART,
                "lists a toc blob (table of tensors) but no config blob".into(),
            ))
        }
    };
    for (blob, max) in [(&config_blob, CONFIG_MAX_BYTES), (&toc_blob, TOC_MAX_BYTES)] {
        if blob.size > max {
            return Err(src.damaged(
                DIRECTORY_PART,
                format!(
                    "gives the {} blob {} bytes, far more than one takes",
                    blob.key, blob.size
                ),
            ));
        }
    }
    let bytes = src.read(config_blob.offset, config_blob.size as usize)?;
    let (config, summary) =
        config::ModelConfig::read(&bytes).map_err(|e| src.damaged(CONFIG_PART, e.to_string()))?;
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(src.damaged(CONFIG_PART, problem));
    }
    let bytes = src.read(toc_blob.offset, toc_blob.size as usize)?;
    let toc = toc::read(&bytes).map_err(|e| src.damaged(TOC_PART, e.to_string()))?;
    let sizes: std::collections::HashMap<&str, u64> =
        blobs.iter().map(|b| (b.key.as_str(), b.size)).collect();
    tensors::check(&config, &toc, &sizes).map_err(|reason| src.damaged(TOC_PART, reason))?;

    info.specifier = Some(config.specifier());
    info.family = config.family().map(str::to_string);
    info.weight_type = Some(config::type_name(config.weight).to_string());
    info.instruct = Some(config.chat());
    info.layers = Some(config.num_layers);
    info.tensor_count = toc.len() as u32;
    info.display_name = Some(config.display_name.clone()).filter(|n| !n.is_empty());
    info.model_dim = Some(config.model_dim);
    info.vocab_size = Some(config.vocab_size);
    info.max_seq_len = Some(config.max_seq_len);
    info.wrapping = config::WRAPPINGS
        .get(config.wrapping as usize)
        .map(|w| w.1.to_string());
    info.config_note = match (summary.missing, summary.extra) {
        (0, 0) => None,
        (m, 0) => Some(format!(
            "written by an older gemma.cpp ({m} fields absent, defaults used)"
        )),
        (_, x) => Some(format!(
            "written by a newer gemma.cpp ({x} words this reader does not know)"
        )),
    };
    Ok(())
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
        display_name: None,
        model_dim: None,
        vocab_size: None,
        max_seq_len: None,
        wrapping: None,
        config_note: None,
    }
}

/// Writes small synthetic BlobStores for tests (here and in `tests/`, which build with the
/// `test-support` feature). A panic here is a broken test, never user input.
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::expect_used)]
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

    /// A tiny config shaped exactly like a real one (gemma.cpp's serialized `ModelConfig`) for
    /// the model, weight type and wrapping `specifier` names (e.g. `gemma3-270m-sfp-it`), with
    /// the family's real layer count and small widths so the whole file stays a few KiB.
    pub fn tiny_config(specifier: &str) -> super::config::ModelConfig {
        use super::config::*;
        let (model, prefix) = MODELS
            .iter()
            .filter(|(_, p)| specifier.starts_with(&format!("{p}-")))
            .max_by_key(|(_, p)| p.len())
            .copied()
            .unwrap_or((MODEL_GEMMA3_270M, "gemma3-270m"));
        let rest = &specifier[prefix.len().min(specifier.len())..];
        let weight = TYPE_NAMES
            .iter()
            .position(|t| rest.starts_with(&format!("-{t}")))
            .unwrap_or(3) as u32;
        let wrapping = WRAPPINGS
            .iter()
            .position(|(s, _)| rest.ends_with(s))
            .unwrap_or(0) as u32;
        let layers = match prefix {
            "gemma3-1b" | "gemma2-2b" => 26,
            "gemma3-4b" => 34,
            "gemma3-12b" => 48,
            "gemma3-27b" => 62,
            _ => 18,
        };
        let mut c = gemma3_text(18, 640, 16, 2, 1, 4, 128, 32, 16, weight, wrapping == 0)
            .expect("a 270M-sized config");
        c.model = model;
        c.wrapping = wrapping;
        c.model_dim = 8;
        c.num_layers = layers;
        c.layer_configs = vec![LayerConfig::gemma3(8, 16, 2, 1, 4); layers as usize];
        c.attention_window_sizes = (0..layers)
            .map(|i| if i % 6 == 5 { 32 } else { 16 })
            .collect();
        c
    }

    /// A whole single-file (2025) model laid out like gemma.cpp's and the converter's files:
    /// every tensor of a Gemma 3 text model (`tiny_config` sizes), then the config, a tokenizer
    /// blob and the table of tensors.
    pub fn single_file(specifier: &str, v2: bool) -> Vec<u8> {
        let config = tiny_config(specifier);
        let toc = super::tensors::gemma3_layout(&config, config.weight);
        let mut blobs: Vec<(String, Vec<u8>)> = toc
            .iter()
            .map(|e| (e.name.clone(), vec![1u8; e.expected_bytes() as usize]))
            .collect();
        blobs.push(("config".into(), config.to_bytes().expect("a valid config")));
        blobs.push((
            "tokenizer".into(),
            b"\x0a\x05stand-in sentencepiece".to_vec(),
        ));
        blobs.push((
            "toc".into(),
            super::toc::to_bytes(&toc).expect("a valid toc"),
        ));
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
            assert_eq!(info.blob_count, 3 + 2 + 18 * 12);
            assert_eq!(info.tensor_count, 2 + 18 * 12);
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

        // A whole V2 file with a damaged trailing header is damaged, not truncated; one cut
        // anywhere (even just before its header) is truncated.
        let n = v2.len();
        for (at, says) in [
            (n - 16, "does not start with the BlobStore magic"),
            (
                n - 12,
                "says the file holds 4294967074 blobs, but the directory before it lists 221",
            ),
            (n - 8, "records a file size of"),
        ] {
            let mut bad = v2.clone();
            bad[at..at + 4].iter_mut().for_each(|b| *b ^= 0xff);
            let err = parse_bytes(&bad).unwrap_err().to_string();
            assert!(
                err.contains("is a damaged gemma.cpp .sbs file: its trailing BlobStore header")
                    && err.contains(says),
                "{err}"
            );
        }
        for cut in [n - 16, n - 1, n - 100, n / 2] {
            let err = parse_bytes(&v2[..cut]).unwrap_err().to_string();
            assert!(
                err.contains("is a truncated gemma.cpp .sbs file"),
                "cut at {cut}: {err}"
            );
        }

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
