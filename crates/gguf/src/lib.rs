//! Reads the header of a GGUF model file and checks it before any engine is asked to load it.
//!
//! llama.cpp answers a damaged file with an assertion or a terse log line deep inside the engine
//! process; this inspector turns the same problems (missing file, wrong format, truncated
//! download, corrupt header) into one sentence that names the file and the fix, before anything
//! is spawned. It also yields the facts `gemmactl models show` and the memory estimate need.
//!
//! It is its own crate because both binaries judge files with it: gemmactl before it spawns an
//! engine, and gemma-engine before it hands the file to llama.cpp. Only `std` is used.
//!
//! The input is untrusted: every length read from the file is checked against the bytes that
//! remain before anything is allocated or looped over, large arrays (the 262k-entry vocabulary)
//! are skipped rather than collected, arithmetic is checked, and nothing here panics.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What the header of a GGUF file says about the model in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    /// The GGUF format version (2 or 3).
    pub version: u32,
    /// Tensors the header lists.
    pub tensor_count: u64,
    /// Metadata key-value pairs the header lists.
    pub metadata_count: u64,
    /// `general.architecture` (e.g. `gemma3`); the prefix of the architecture-specific keys.
    pub architecture: Option<String>,
    /// `general.name`: the model's human name.
    pub name: Option<String>,
    /// `<arch>.context_length`: the context length the model was trained for, in tokens.
    pub context_length: Option<u64>,
    /// `<arch>.block_count`: transformer layers.
    pub block_count: Option<u64>,
    /// `<arch>.embedding_length`: width of the hidden state, in elements.
    pub embedding_length: Option<u64>,
    /// `<arch>.attention.head_count`: query heads per layer.
    pub head_count: Option<u64>,
    /// `<arch>.attention.head_count_kv`: key/value heads per layer (fewer than query heads
    /// under grouped-query attention); sizes the KV cache.
    pub head_count_kv: Option<u64>,
    /// `<arch>.attention.key_length`: elements per key head.
    pub key_length: Option<u64>,
    /// `<arch>.attention.value_length`: elements per value head.
    pub value_length: Option<u64>,
    /// `<arch>.attention.sliding_window`: window of the local-attention layers, in tokens.
    pub sliding_window: Option<u64>,
    /// llama.cpp's `llama_ftype` (15 = Q4_K_M); see [`file_type_name`].
    pub file_type: Option<u32>,
    /// `tokenizer.chat_template`: the model's own chat template (Jinja text), if it has one.
    pub chat_template: Option<String>,
    /// Sum of the element counts of all tensors.
    pub parameter_count: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// The byte just past the last tensor's data: a file shorter than this is truncated.
    pub data_end: u64,
    /// For a multimodal projector (`general.architecture` `clip`, what llama.cpp's `--mmproj`
    /// loads): its vision facts.
    pub projector: Option<Projector>,
}

/// What the header of a vision projector GGUF (`general.architecture = clip`) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Projector {
    /// `clip.projector_type` (or `clip.vision.projector_type`): which projector, e.g. `gemma3`.
    pub projector_type: Option<String>,
    /// `clip.vision.image_size`: side of the square image the encoder sees, in pixels.
    pub image_size: Option<u64>,
    /// `clip.vision.patch_size`: side of one patch, in pixels.
    pub patch_size: Option<u64>,
    /// `clip.vision.projection_dim`: the embedding length of the text model it feeds; it must
    /// equal that model's `<arch>.embedding_length`.
    pub projection_dim: Option<u64>,
    /// `clip.vision.projector.scale_factor`: how much Gemma 3's projector pools the patch grid
    /// on each side (llama.cpp's default for `gemma3`: 4).
    pub scale_factor: Option<u64>,
    /// `clip.vision.block_count`: encoder layers.
    pub block_count: Option<u64>,
    /// `clip.vision.embedding_length`: width of the encoder.
    pub embedding_length: Option<u64>,
}

impl Projector {
    /// Context tokens one image takes, for the projector types whose count is fixed by the
    /// header: Gemma 3's pooled patch grid, plus the `<start_of_image>` and `<end_of_image>`
    /// markers around it. `None` where it depends on the image or the type is not known here.
    pub fn tokens_per_image(&self) -> Option<u64> {
        match self.projector_type.as_deref()? {
            "gemma3" => {
                let side = self.image_size? / self.patch_size.filter(|p| *p > 0)?;
                let pooled = side / self.scale_factor.unwrap_or(4).max(1);
                Some(pooled * pooled + 2)
            }
            _ => None,
        }
    }
}

/// Why a file cannot be used as a GGUF model. `Display` is one sentence naming the file and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufError {
    /// The file could not be opened or read.
    Io {
        /// The model file.
        path: PathBuf,
        /// The operating system's words.
        message: String,
    },
    /// No file exists at the path.
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The file does not start with "GGUF"; `sbs` says it starts with gemma.cpp's BlobStore magic.
    NotGguf {
        /// The file.
        path: PathBuf,
        /// The file is a gemma.cpp `.sbs` weights file.
        sbs: bool,
    },
    /// The file is a Git LFS pointer: the small text file Git LFS leaves where a large file
    /// was not downloaded. `size` is the real file's size, as the pointer says.
    LfsPointer {
        /// The pointer file.
        path: PathBuf,
        /// The size of the model it stands for, when it says.
        size: Option<u64>,
    },
    /// The GGUF version is not 2 or 3 (a byte-swapped 2 or 3 means a big-endian file).
    UnsupportedVersion {
        /// The model file.
        path: PathBuf,
        /// The version number as read (little-endian).
        version: u32,
    },
    /// The file is shorter than its header says. `in_header` means it ends inside the header
    /// itself, and `expected_bytes` is then only a lower bound.
    Truncated {
        /// The model file.
        path: PathBuf,
        /// Bytes the header says the file holds (a lower bound when `in_header`).
        expected_bytes: u64,
        /// Bytes the file holds.
        actual_bytes: u64,
        /// The file ends inside the header.
        in_header: bool,
    },
    /// The header contradicts itself or the format (a bad type tag, an impossible length).
    Malformed {
        /// The model file.
        path: PathBuf,
        /// What is wrong, as a phrase naming the part of the header and its byte offset.
        reason: String,
    },
}

impl GgufError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            GgufError::Io { path, .. }
            | GgufError::Missing { path }
            | GgufError::NotGguf { path, .. }
            | GgufError::LfsPointer { path, .. }
            | GgufError::UnsupportedVersion { path, .. }
            | GgufError::Truncated { path, .. }
            | GgufError::Malformed { path, .. } => path,
        }
    }
}

const REFETCH: &str = "download it again (`gemmactl models pull`) or copy the whole file";

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io { path, message } => write!(
                f,
                "cannot read model file {}: {message}; check that it is a readable regular file",
                path.display()
            ),
            GgufError::Missing { path } => {
                write!(
                    f,
                    "model file {} does not exist: check the path",
                    path.display()
                )
            }
            GgufError::NotGguf { path, sbs: true } => write!(
                f,
                "{} is a gemma.cpp .sbs weights file, which gemma-engine cannot load: use a GGUF \
                 model file instead (e.g. `gemmactl models pull gemma3-270m`)",
                path.display()
            ),
            GgufError::NotGguf { path, sbs: false } => write!(
                f,
                "{} is not a GGUF model file (it does not start with the bytes \"GGUF\"): point \
                 at a .gguf file, e.g. one fetched with `gemmactl models pull`",
                path.display()
            ),
            GgufError::LfsPointer { path, size } => write!(
                f,
                "{} is a Git LFS pointer, not the model: {}; run `git lfs pull` in the \
                 repository it came from, or download the model file itself (e.g. `gemmactl \
                 models pull`)",
                path.display(),
                lfs_what(*size)
            ),
            GgufError::UnsupportedVersion { path, version } => {
                let swapped = version.swap_bytes();
                if swapped == 2 || swapped == 3 {
                    write!(
                        f,
                        "{} is a big-endian GGUF file, which this machine cannot load: use the \
                         little-endian version of the model",
                        path.display()
                    )
                } else if *version < 2 {
                    write!(
                        f,
                        "{} uses GGUF version {version}, which is too old to load (versions 2 and \
                         3 are supported): convert the model again with a current llama.cpp",
                        path.display()
                    )
                } else {
                    write!(
                        f,
                        "{} uses GGUF version {version}, newer than this gemmactl understands \
                         (versions 2 and 3): upgrade gemmactl or convert the model to GGUF v3",
                        path.display()
                    )
                }
            }
            GgufError::Truncated {
                path,
                expected_bytes,
                actual_bytes,
                in_header: false,
            } => {
                write!(
                    f,
                    "{} is truncated: the header says the tensor data ends at byte \
                     {expected_bytes} but the file has {actual_bytes} bytes; {REFETCH}",
                    path.display()
                )
            }
            GgufError::Truncated {
                path,
                expected_bytes,
                actual_bytes,
                in_header: true,
            } => {
                write!(
                    f,
                    "{} is truncated: the file ends after {actual_bytes} bytes, inside its GGUF \
                     header (which needs at least {expected_bytes} bytes); {REFETCH}",
                    path.display()
                )
            }
            GgufError::Malformed { path, reason } => write!(
                f,
                "{} is not a valid GGUF file ({reason}): the file is damaged or was written by a \
                 broken tool; download or convert it again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for GgufError {}

/// What a Git LFS pointer stands for, for an error sentence.
pub fn lfs_what(size: Option<u64>) -> String {
    match size {
        Some(size) => format!("the real {size}-byte file was never downloaded"),
        None => "the real file was never downloaded".into(),
    }
}

/// Longest Git LFS pointer looked for: real ones are about 130 bytes, the spec caps them at 1024.
pub const LFS_POINTER_MAX_BYTES: u64 = 1024;

/// If `head` (a whole file of at most [`LFS_POINTER_MAX_BYTES`]) is a Git LFS pointer, the size
/// of the file it stands for, when it says. A pointer is three or more `key value` lines: first
/// `version https://…`, then among others `oid sha256:…` and `size N`.
pub fn lfs_pointer(head: &[u8]) -> Option<Option<u64>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    if !lines.next()?.starts_with("version https://") {
        return None;
    }
    let mut oid = false;
    let mut size = None;
    for line in lines {
        if line.starts_with("oid sha256:") {
            oid = true;
        } else if let Some(n) = line.strip_prefix("size ") {
            size = n.trim().parse().ok();
        }
    }
    oid.then_some(size)
}

impl GgufInfo {
    /// Facts of a `file_size`-byte file of which nothing else is known yet.
    pub fn blank(file_size: u64) -> GgufInfo {
        GgufInfo {
            version: 0,
            tensor_count: 0,
            metadata_count: 0,
            architecture: None,
            name: None,
            context_length: None,
            block_count: None,
            embedding_length: None,
            head_count: None,
            head_count_kv: None,
            key_length: None,
            value_length: None,
            sliding_window: None,
            file_type: None,
            chat_template: None,
            parameter_count: 0,
            file_size,
            data_end: 0,
            projector: None,
        }
    }
}

/// Inspects the GGUF file at `path`.
pub fn inspect(path: &Path) -> Result<GgufInfo, GgufError> {
    let io_error = |e: io::Error| GgufError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(GgufError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error(e)),
    };
    if meta.is_dir() {
        return Err(GgufError::Io {
            path: path.to_path_buf(),
            message: "it is a folder".into(),
        });
    }
    let file = File::open(path).map_err(io_error)?;
    // A large buffer keeps skipping the vocabulary's many short strings cheap.
    parse(BufReader::with_capacity(1 << 16, file), meta.len(), path)
}

/// Parses a GGUF header from `reader`, whose whole length is `file_size`; `path` only names the
/// file in errors. Positions are absolute: the reader is rewound to its start first.
pub fn parse<R: Read + Seek>(
    reader: R,
    file_size: u64,
    path: &Path,
) -> Result<GgufInfo, GgufError> {
    let mut r = Reader {
        inner: reader,
        pos: 0,
        size: file_size,
        path,
    };
    r.inner.seek(SeekFrom::Start(0)).map_err(|e| r.io(e))?;
    r.parse()
}

/// The usual name of a llama.cpp file type (`general.file_type`), e.g. 15 → "Q4_K_M".
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

/// Elements per block and bytes per block of a ggml tensor type, or `None` for an id that no
/// current GGUF file may contain (the removed types included).
pub fn ggml_type_layout(type_id: u32) -> Option<(u64, u64)> {
    const QK_K: u64 = 256;
    Some(match type_id {
        0 => (1, 4),       // F32
        1 => (1, 2),       // F16
        2 => (32, 18),     // Q4_0: f16 scale + 16 bytes of nibbles
        3 => (32, 20),     // Q4_1: f16 scale, f16 min + 16
        6 => (32, 22),     // Q5_0: f16 + 4 high bits + 16
        7 => (32, 24),     // Q5_1: 2 × f16 + 4 + 16
        8 => (32, 34),     // Q8_0: f16 + 32
        9 => (32, 36),     // Q8_1: 2 × f16 + 32
        10 => (QK_K, 84),  // Q2_K
        11 => (QK_K, 110), // Q3_K
        12 => (QK_K, 144), // Q4_K
        13 => (QK_K, 176), // Q5_K
        14 => (QK_K, 210), // Q6_K
        15 => (QK_K, 292), // Q8_K: f32 + 256 + 16 × i16
        16 => (QK_K, 66),  // IQ2_XXS
        17 => (QK_K, 74),  // IQ2_XS
        18 => (QK_K, 98),  // IQ3_XXS
        19 => (QK_K, 50),  // IQ1_S
        20 => (32, 18),    // IQ4_NL
        21 => (QK_K, 110), // IQ3_S
        22 => (QK_K, 82),  // IQ2_S
        23 => (QK_K, 136), // IQ4_XS
        24 => (1, 1),      // I8
        25 => (1, 2),      // I16
        26 => (1, 4),      // I32
        27 => (1, 8),      // I64
        28 => (1, 8),      // F64
        29 => (QK_K, 56),  // IQ1_M
        30 => (1, 2),      // BF16
        34 => (QK_K, 54),  // TQ1_0
        35 => (QK_K, 66),  // TQ2_0
        39 => (32, 17),    // MXFP4: one E8M0 scale + 16
        40 => (64, 36),    // NVFP4: 4 scales + 32
        41 => (128, 18),   // Q1_0
        42 => (64, 18),    // Q2_0
        _ => return None,
    })
}

// GGUF metadata value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

const MAGIC: &[u8; 4] = b"GGUF";
/// gemma.cpp's BlobStore files start with the little-endian u32 0x0A534253 ("SBS\n").
const SBS_MAGIC: [u8; 4] = 0x0A53_4253u32.to_le_bytes();
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Keys are short ASCII names; anything longer is damage, not a key.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// No GGUF writer produces a single string this large.
const MAX_STRING_BYTES: u64 = 1 << 30;
/// Longest chat template kept; real ones are a few KiB, larger ones are skipped.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// Longest architecture or model name kept.
const MAX_NAME_BYTES: u64 = 4096;
/// GGUF allows arrays of arrays; llama.cpp reads none, so a deep nest is damage.
const MAX_ARRAY_DEPTH: u32 = 4;
/// A claimed size past the end of the file counts as truncation unless it is beyond any real
/// model size, which only a corrupt header produces.
const PLAUSIBLE_BYTES: u64 = 1 << 40;
/// Architecture-specific integer keys are remembered until `general.architecture` is known
/// (it usually comes first, but the format does not promise it); this bounds how many.
const MAX_PENDING_KEYS: usize = 256;

/// The architecture-specific keys reported in [`GgufInfo`], by suffix after `<arch>.`.
const ARCH_SUFFIXES: [&str; 8] = [
    "context_length",
    "block_count",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
];

/// A metadata value, reduced to what the inspector keeps.
enum Value {
    Int(i128),
    Str(String),
    Skipped,
}

/// What to keep of a metadata value, chosen from its key before the value is read.
#[derive(Clone, Copy)]
enum Want {
    Int,
    Str(u64),
    Nothing,
}

struct Reader<'a, R> {
    inner: R,
    pos: u64,
    size: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn io(&self, e: io::Error) -> GgufError {
        GgufError::Io {
            path: self.path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn malformed(&self, reason: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn truncated_header(&self, expected: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            expected_bytes: expected,
            actual_bytes: self.size,
            in_header: true,
        }
    }

    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    /// Checks that `n` more bytes exist before reading, skipping or looping over them.
    fn claim(&self, n: u64, what: &str) -> Result<(), GgufError> {
        if n <= self.remaining() {
            return Ok(());
        }
        match self.pos.checked_add(n) {
            Some(end) if n <= PLAUSIBLE_BYTES => Err(self.truncated_header(end)),
            _ => Err(self.malformed(format!("{what} at byte {} claims {n} bytes", self.pos))),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        let n = buf.len() as u64;
        self.claim(n, "a value")?;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += n;
                Ok(())
            }
            // The stream was shorter than `file_size` promised: the file shrank under us.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.truncated_header(self.pos.saturating_add(n)))
            }
            Err(e) => Err(self.io(e)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.claim(n, what)?;
        if n == 0 {
            return Ok(());
        }
        if n <= 4096 {
            // Short skips read through the buffer; seeking would throw the buffer away. The
            // scratch is small because it is zeroed on every call, and the vocabulary makes
            // 262k calls of a few bytes each (a 4 KiB scratch cost ~13 ms a file).
            let mut scratch = [0u8; 256];
            let mut left = n as usize;
            while left > 0 {
                let take = left.min(scratch.len());
                self.fill(&mut scratch[..take])?;
                left -= take;
            }
            return Ok(());
        }
        let target = self.pos + n; // cannot overflow: claim() bounded it by the file size
        self.inner
            .seek(SeekFrom::Start(target))
            .map_err(|e| self.io(e))?;
        self.pos = target;
        Ok(())
    }

    /// Reads a string's length prefix and checks the bytes are there.
    fn string_len(&mut self, what: &str) -> Result<u64, GgufError> {
        let at = self.pos;
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(
                self.malformed(format!("{what} at byte {at} claims to be {len} bytes long"))
            );
        }
        self.claim(len, what)?;
        Ok(len)
    }

    /// Reads a string, keeping it only if it is at most `cap` bytes long.
    fn string(&mut self, cap: u64, what: &str) -> Result<Option<String>, GgufError> {
        let len = self.string_len(what)?;
        if len > cap {
            self.skip(len, what)?;
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn parse(&mut self) -> Result<GgufInfo, GgufError> {
        // Magic. A file shorter than the magic is truncated if what it has is the start of it.
        if self.size < 4 {
            let mut head = vec![0u8; self.size as usize];
            self.fill(&mut head)?;
            if MAGIC.starts_with(&head) {
                return Err(self.truncated_header(4));
            }
            return Err(GgufError::NotGguf {
                path: self.path.to_path_buf(),
                sbs: false,
            });
        }
        let magic: [u8; 4] = self.array()?;
        if &magic == b"vers" && self.size <= LFS_POINTER_MAX_BYTES {
            let mut rest = vec![0u8; self.size as usize - 4];
            self.fill(&mut rest)?;
            let head = [&magic[..], &rest].concat();
            if let Some(size) = lfs_pointer(&head) {
                return Err(GgufError::LfsPointer {
                    path: self.path.to_path_buf(),
                    size,
                });
            }
        }
        if &magic != MAGIC {
            return Err(GgufError::NotGguf {
                path: self.path.to_path_buf(),
                sbs: magic == SBS_MAGIC,
            });
        }
        let version = self.u32()?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion {
                path: self.path.to_path_buf(),
                version,
            });
        }
        let tensor_count = self.u64()?;
        let metadata_count = self.u64()?;
        // Each entry takes at least this many bytes, which bounds both loops by the file size.
        self.claim(metadata_count.saturating_mul(13), "the metadata table")?;

        let mut info = GgufInfo {
            version,
            tensor_count,
            metadata_count,
            ..GgufInfo::blank(self.size)
        };
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut pending: Vec<(String, i128)> = Vec::new();
        let mut projector_type = None;

        for _ in 0..metadata_count {
            let key_at = self.pos;
            let key_len = self.string_len("a metadata key")?;
            if key_len > MAX_KEY_BYTES {
                return Err(self.malformed(format!(
                    "the metadata key at byte {key_at} is {key_len} bytes long"
                )));
            }
            let mut key_bytes = vec![0u8; key_len as usize];
            self.fill(&mut key_bytes)?;
            let key = String::from_utf8_lossy(&key_bytes).into_owned();
            let value_type = self.u32()?;
            let want = match key.as_str() {
                "general.architecture" | "general.name" => Want::Str(MAX_NAME_BYTES),
                "tokenizer.chat_template" => Want::Str(MAX_TEMPLATE_BYTES),
                "general.file_type" | "general.alignment" => Want::Int,
                "clip.projector_type" | "clip.vision.projector_type" => Want::Str(MAX_NAME_BYTES),
                k if k.starts_with("clip.vision.") => Want::Int,
                k if ARCH_SUFFIXES.iter().any(|s| arch_suffix(k, s)) => Want::Int,
                _ => Want::Nothing,
            };
            let value = self.value(value_type, want, &key)?;
            match (key.as_str(), value) {
                ("general.architecture", Value::Str(s)) => info.architecture = Some(s),
                ("general.name", Value::Str(s)) => info.name = Some(s),
                ("tokenizer.chat_template", Value::Str(s)) => info.chat_template = Some(s),
                ("clip.projector_type" | "clip.vision.projector_type", Value::Str(s)) => {
                    projector_type.get_or_insert(s);
                }
                ("general.file_type", Value::Int(v)) => info.file_type = u32::try_from(v).ok(),
                ("general.alignment", Value::Int(v)) => {
                    alignment = match u64::try_from(v) {
                        Ok(a) if a.is_power_of_two() && a <= 1 << 30 => a,
                        _ => {
                            return Err(self.malformed(format!(
                                "general.alignment is {v}, not a power of two"
                            )))
                        }
                    }
                }
                (_, Value::Int(v)) if pending.len() < MAX_PENDING_KEYS => pending.push((key, v)),
                _ => {}
            }
        }

        if let Some(arch) = info.architecture.clone() {
            let lookup = |suffix: &str| {
                let key = format!("{arch}.{suffix}");
                pending
                    .iter()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, v)| u64::try_from(*v).ok())
            };
            info.context_length = lookup("context_length");
            info.block_count = lookup("block_count");
            info.embedding_length = lookup("embedding_length");
            info.head_count = lookup("attention.head_count");
            info.head_count_kv = lookup("attention.head_count_kv");
            info.key_length = lookup("attention.key_length");
            info.value_length = lookup("attention.value_length");
            info.sliding_window = lookup("attention.sliding_window");
        }
        if info.architecture.as_deref() == Some("clip") {
            let lookup = |key: &str| {
                pending
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| u64::try_from(*v).ok())
            };
            info.projector = Some(Projector {
                projector_type,
                image_size: lookup("clip.vision.image_size"),
                patch_size: lookup("clip.vision.patch_size"),
                projection_dim: lookup("clip.vision.projection_dim"),
                scale_factor: lookup("clip.vision.projector.scale_factor"),
                block_count: lookup("clip.vision.block_count"),
                embedding_length: lookup("clip.vision.embedding_length"),
            });
        }

        // Tensor infos: name, dimensions, type and offset into the data section.
        self.claim(tensor_count.saturating_mul(24), "the tensor table")?;
        let mut data_size: u64 = 0;
        for index in 0..tensor_count {
            let name = self.string(256, "a tensor name")?;
            let label = match name {
                Some(n) => format!("tensor '{n}'"),
                None => format!("tensor #{index}"),
            };
            let n_dims = self.u32()?;
            if n_dims > MAX_DIMS {
                return Err(self.malformed(format!("{label} claims {n_dims} dimensions")));
            }
            let mut elements: u64 = 1;
            let mut first_dim: u64 = 1;
            for d in 0..n_dims {
                let dim = self.u64()?;
                if dim > i64::MAX as u64 {
                    return Err(self.malformed(format!("{label} has a dimension of {dim}")));
                }
                if d == 0 {
                    first_dim = dim;
                }
                elements = elements
                    .checked_mul(dim)
                    .filter(|e| *e <= i64::MAX as u64)
                    .ok_or_else(|| {
                        self.malformed(format!("{label} has more elements than fit in 64 bits"))
                    })?;
            }
            let type_id = self.u32()?;
            let Some((block, block_bytes)) = ggml_type_layout(type_id) else {
                return Err(self.malformed(format!("{label} has unknown tensor type {type_id}")));
            };
            let offset = self.u64()?;
            // `is_multiple_of` is newer than the workspace's declared minimum Rust (1.80).
            #[allow(unknown_lints, clippy::manual_is_multiple_of)]
            let ragged = first_dim % block != 0;
            if ragged {
                return Err(self.malformed(format!(
                    "{label} has a first dimension of {first_dim}, not a multiple of its type's \
                     block of {block}"
                )));
            }
            if offset % alignment != 0 {
                return Err(self.malformed(format!(
                    "{label} starts at offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            let end = (elements / block)
                .checked_mul(block_bytes)
                .and_then(|bytes| offset.checked_add(bytes))
                .ok_or_else(|| self.malformed(format!("{label} ends past 2^64 bytes")))?;
            data_size = data_size.max(end);
            info.parameter_count = info.parameter_count.checked_add(elements).ok_or_else(|| {
                self.malformed("the tensors hold more than 2^64 elements".to_string())
            })?;
        }

        let header_end = self.pos;
        info.data_end = if tensor_count == 0 {
            header_end
        } else {
            header_end
                .checked_next_multiple_of(alignment)
                .and_then(|start| start.checked_add(data_size))
                .ok_or_else(|| self.malformed("the tensor data ends past 2^64 bytes".to_string()))?
        };
        if info.data_end > self.size {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                expected_bytes: info.data_end,
                actual_bytes: self.size,
                in_header: false,
            });
        }
        Ok(info)
    }

    /// Reads (or skips) one metadata value of type `value_type`.
    fn value(&mut self, value_type: u32, want: Want, key: &str) -> Result<Value, GgufError> {
        let int = |v: i128| {
            if matches!(want, Want::Int) {
                Value::Int(v)
            } else {
                Value::Skipped
            }
        };
        Ok(match value_type {
            T_U8 => int(self.u8()? as i128),
            T_I8 => int(self.u8()? as i8 as i128),
            T_U16 => int(self.u16()? as i128),
            T_I16 => int(self.u16()? as i16 as i128),
            T_U32 => int(self.u32()? as i128),
            T_I32 => int(self.u32()? as i32 as i128),
            T_U64 => int(self.u64()? as i128),
            T_I64 => int(self.u64()? as i64 as i128),
            T_F32 | T_BOOL | T_F64 => {
                self.skip(fixed_size(value_type).unwrap_or(0), "a metadata value")?;
                Value::Skipped
            }
            T_STRING => match want {
                Want::Str(cap) => match self.string(cap, "a metadata string")? {
                    Some(s) => Value::Str(s),
                    None => Value::Skipped,
                },
                _ => {
                    let len = self.string_len("a metadata string")?;
                    self.skip(len, "a metadata string")?;
                    Value::Skipped
                }
            },
            T_ARRAY => {
                self.skip_array(0, key)?;
                Value::Skipped
            }
            other => {
                return Err(
                    self.malformed(format!("metadata key {key} has unknown value type {other}"))
                )
            }
        })
    }

    /// Skips an array value without collecting it; only length prefixes are read.
    fn skip_array(&mut self, depth: u32, key: &str) -> Result<(), GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.malformed(format!("metadata key {key} nests arrays too deeply")));
        }
        let elem_type = self.u32()?;
        let count = self.u64()?;
        match elem_type {
            T_STRING => {
                // Every string has an 8-byte length, which bounds the loop by the file size.
                self.claim(count.saturating_mul(8), "a string array")?;
                for _ in 0..count {
                    let len = self.string_len("a string in an array")?;
                    self.skip(len, "a string in an array")?;
                }
            }
            T_ARRAY => {
                self.claim(count.saturating_mul(12), "an array of arrays")?;
                for _ in 0..count {
                    self.skip_array(depth + 1, key)?;
                }
            }
            t => match fixed_size(t) {
                Some(size) => {
                    let bytes = count.checked_mul(size).ok_or_else(|| {
                        self.malformed(format!("metadata key {key} claims {count} array elements"))
                    })?;
                    self.skip(bytes, "an array")?;
                }
                None => {
                    return Err(self.malformed(format!(
                        "metadata key {key} is an array of unknown value type {t}"
                    )))
                }
            },
        }
        Ok(())
    }
}

/// Whether `key` is `<something>.<suffix>` (the architecture is not known yet when it is read).
fn arch_suffix(key: &str, suffix: &str) -> bool {
    key.len() > suffix.len() + 1
        && key.ends_with(suffix)
        && key.as_bytes()[key.len() - suffix.len() - 1] == b'.'
        && !key.starts_with("general.")
        && !key.starts_with("tokenizer.")
}

/// Bytes taken by one value of a fixed-size metadata type.
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

/// Builds synthetic GGUF files for tests (here, and with the `test-support` feature in the tests
/// of the crates that read GGUF files).
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::expect_used, missing_docs)]
pub mod test_writer {
    /// A GGUF file under construction: metadata entries and tensors (whose data is zeros).
    pub struct Writer {
        pub version: u32,
        pub alignment: u64,
        kv: Vec<u8>,
        kv_count: u64,
        tensors: Vec<(String, Vec<u64>, u32)>,
    }

    impl Default for Writer {
        fn default() -> Self {
            Writer {
                version: 3,
                alignment: 32,
                kv: Vec::new(),
                kv_count: 0,
                tensors: Vec::new(),
            }
        }
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    impl Writer {
        /// A small but complete gemma3-like model.
        pub fn sample() -> Writer {
            let mut w = Writer::default();
            w.string("general.architecture", "gemma3")
                .string("general.name", "tiny")
                .int("general.file_type", 4, &15u32.to_le_bytes())
                .int("gemma3.context_length", 4, &32768u32.to_le_bytes())
                .int("gemma3.block_count", 10, &18u64.to_le_bytes())
                .int("gemma3.embedding_length", 5, &640i32.to_le_bytes())
                .int("gemma3.attention.head_count", 2, &4u16.to_le_bytes())
                .int("gemma3.attention.head_count_kv", 0, &[1u8])
                .int("gemma3.attention.key_length", 11, &256i64.to_le_bytes())
                .int("gemma3.attention.value_length", 3, &256i16.to_le_bytes())
                .int("gemma3.attention.sliding_window", 4, &512u32.to_le_bytes())
                .strings(
                    "tokenizer.ggml.tokens",
                    &["<pad>", "<eos>", "<bos>", "hello"],
                )
                .int("tokenizer.ggml.bos_token_id", 4, &2u32.to_le_bytes())
                .tensor("token_embd.weight", &[64, 4], 8) // Q8_0
                .tensor("blk.0.attn_q.weight", &[256, 2], 12) // Q4_K
                .tensor("output_norm.weight", &[64], 0); // F32
            w
        }

        pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
            put_str(&mut self.kv, key);
            self.kv.extend_from_slice(&8u32.to_le_bytes());
            put_str(&mut self.kv, value);
            self.kv_count += 1;
            self
        }

        /// An integer entry of GGUF value type `ty` whose little-endian bytes are `bytes`.
        pub fn int(&mut self, key: &str, ty: u32, bytes: &[u8]) -> &mut Self {
            put_str(&mut self.kv, key);
            self.kv.extend_from_slice(&ty.to_le_bytes());
            self.kv.extend_from_slice(bytes);
            self.kv_count += 1;
            self
        }

        pub fn strings(&mut self, key: &str, values: &[&str]) -> &mut Self {
            put_str(&mut self.kv, key);
            self.kv.extend_from_slice(&9u32.to_le_bytes());
            self.kv.extend_from_slice(&8u32.to_le_bytes());
            self.kv
                .extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                put_str(&mut self.kv, v);
            }
            self.kv_count += 1;
            self
        }

        /// Raw bytes appended to the metadata section, counted as one entry.
        pub fn raw_entry(&mut self, bytes: &[u8]) -> &mut Self {
            self.kv.extend_from_slice(bytes);
            self.kv_count += 1;
            self
        }

        pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32) -> &mut Self {
            self.tensors.push((name.to_string(), dims.to_vec(), ty));
            self
        }

        /// The whole file: header, tensor infos, padding and zeroed tensor data.
        pub fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(b"GGUF");
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&self.kv_count.to_le_bytes());
            out.extend_from_slice(&self.kv);
            let mut offset = 0u64;
            for (name, dims, ty) in &self.tensors {
                // Offsets follow llama.cpp's writer: each tensor starts aligned.
                put_str(&mut out, name);
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                offset = (offset + Self::tensor_bytes(dims, *ty)).next_multiple_of(self.alignment);
            }
            if !self.tensors.is_empty() {
                out.resize(
                    (out.len() as u64).next_multiple_of(self.alignment) as usize,
                    0,
                );
                out.resize(
                    out.len() + Self::data_len(&self.tensors, self.alignment) as usize,
                    0,
                );
            }
            out
        }

        fn tensor_bytes(dims: &[u64], ty: u32) -> u64 {
            let (block, bytes) = super::ggml_type_layout(ty).expect("known type");
            dims.iter().product::<u64>() / block * bytes
        }

        /// Bytes from the data section's start to the end of the last tensor (no final padding).
        fn data_len(tensors: &[(String, Vec<u64>, u32)], alignment: u64) -> u64 {
            let mut offset = 0u64;
            let mut end = 0u64;
            for (_, dims, ty) in tensors {
                end = offset + Self::tensor_bytes(dims, *ty);
                offset = end.next_multiple_of(alignment);
            }
            end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::Writer;
    use super::*;
    use std::io::Cursor;

    fn parse_bytes(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
        parse(
            Cursor::new(bytes),
            bytes.len() as u64,
            Path::new("/m/x.gguf"),
        )
    }

    #[test]
    fn a_vision_projector_header_yields_its_facts() {
        let mut w = Writer::default();
        w.string("general.architecture", "clip")
            .string("clip.projector_type", "gemma3")
            .int("clip.vision.image_size", 4, &896u32.to_le_bytes())
            .int("clip.vision.patch_size", 4, &14u32.to_le_bytes())
            .int("clip.vision.projection_dim", 4, &2560u32.to_le_bytes())
            .int("clip.vision.block_count", 4, &27u32.to_le_bytes())
            .int("clip.vision.embedding_length", 4, &1152u32.to_le_bytes());
        let info = parse_bytes(&w.build()).unwrap();
        let p = info.projector.expect("a clip file is a projector");
        assert_eq!(p.projector_type.as_deref(), Some("gemma3"));
        assert_eq!(
            (p.image_size, p.patch_size, p.projection_dim, p.scale_factor),
            (Some(896), Some(14), Some(2560), None)
        );
        assert_eq!((p.block_count, p.embedding_length), (Some(27), Some(1152)));
        // llama.cpp's default pooling for gemma3 (4 a side): 16 × 16 embeddings and two markers.
        assert_eq!(p.tokens_per_image(), Some(258));
        // A model file has no projector facts.
        assert_eq!(
            parse_bytes(&Writer::sample().build()).unwrap().projector,
            None
        );
    }

    #[test]
    fn reads_a_valid_file() {
        let bytes = Writer::sample().build();
        let info = parse_bytes(&bytes).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.tensor_count, 3);
        assert_eq!(info.metadata_count, 13);
        assert_eq!(info.architecture.as_deref(), Some("gemma3"));
        assert_eq!(info.name.as_deref(), Some("tiny"));
        assert_eq!(info.file_type, Some(15));
        assert_eq!(info.context_length, Some(32768));
        assert_eq!(info.block_count, Some(18));
        assert_eq!(info.embedding_length, Some(640));
        assert_eq!(info.head_count, Some(4));
        assert_eq!(info.head_count_kv, Some(1));
        assert_eq!(info.key_length, Some(256));
        assert_eq!(info.value_length, Some(256));
        assert_eq!(info.sliding_window, Some(512));
        assert_eq!(info.chat_template, None);
        assert_eq!(info.parameter_count, 64 * 4 + 256 * 2 + 64);
        assert_eq!(info.data_end, bytes.len() as u64);
        assert_eq!(info.file_size, bytes.len() as u64);
    }

    #[test]
    fn architecture_may_come_after_its_keys_and_template_is_kept() {
        let mut w = Writer::default();
        w.int("llama.context_length", 10, &4096u64.to_le_bytes())
            .int("other.context_length", 10, &1u64.to_le_bytes())
            .string("general.architecture", "llama")
            .string("tokenizer.chat_template", "{{ messages }}")
            .int("general.alignment", 4, &64u32.to_le_bytes());
        w.alignment = 64;
        w.tensor("a", &[32], 2).tensor("b", &[3], 0);
        let bytes = w.build();
        let info = parse_bytes(&bytes).unwrap();
        assert_eq!(info.context_length, Some(4096));
        assert_eq!(info.chat_template.as_deref(), Some("{{ messages }}"));
        assert_eq!(info.data_end, bytes.len() as u64);
        assert_eq!(info.data_end % 64, 12);
    }

    #[test]
    fn version_2_is_accepted_and_1_refused() {
        let mut w = Writer::sample();
        w.version = 2;
        assert_eq!(parse_bytes(&w.build()).unwrap().version, 2);
        w.version = 1;
        let err = parse_bytes(&w.build()).unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("too old"), "{err}");
        w.version = 3u32.swap_bytes();
        assert!(parse_bytes(&w.build())
            .unwrap_err()
            .to_string()
            .contains("big-endian"));
    }

    #[test]
    fn truncated_data_is_reported_with_both_sizes() {
        let bytes = Writer::sample().build();
        let cut = &bytes[..bytes.len() - 10];
        let err = parse_bytes(cut).unwrap_err();
        assert_eq!(
            err,
            GgufError::Truncated {
                path: "/m/x.gguf".into(),
                expected_bytes: bytes.len() as u64,
                actual_bytes: cut.len() as u64,
                in_header: false,
            }
        );
        let text = err.to_string();
        assert!(text.contains("/m/x.gguf is truncated"), "{text}");
        assert!(text.contains(&bytes.len().to_string()), "{text}");
        assert!(text.contains("gemmactl models pull"), "{text}");
    }

    #[test]
    fn every_cut_is_truncation() {
        let bytes = Writer::sample().build();
        for len in 0..bytes.len() {
            match parse_bytes(&bytes[..len]) {
                Err(GgufError::Truncated {
                    in_header,
                    actual_bytes,
                    expected_bytes,
                    ..
                }) => {
                    assert_eq!(actual_bytes, len as u64);
                    assert!(expected_bytes > actual_bytes, "cut at {len}");
                    if len < 100 {
                        assert!(in_header, "cut at {len}");
                    }
                }
                other => panic!("cut at {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_magic_and_sbs_magic() {
        let err = parse_bytes(b"hello, this is text\n").unwrap_err();
        assert_eq!(
            err,
            GgufError::NotGguf {
                path: "/m/x.gguf".into(),
                sbs: false
            }
        );
        assert!(err.to_string().contains("not a GGUF"), "{err}");
        let mut sbs = 0x0A53_4253u32.to_le_bytes().to_vec();
        sbs.extend_from_slice(&[0u8; 60]);
        let err = parse_bytes(&sbs).unwrap_err();
        assert_eq!(
            err,
            GgufError::NotGguf {
                path: "/m/x.gguf".into(),
                sbs: true
            }
        );
        assert!(err.to_string().contains("gemma.cpp .sbs"), "{err}");
        assert!(matches!(parse_bytes(b"xy"), Err(GgufError::NotGguf { .. })));
        assert!(matches!(
            parse_bytes(b"GG"),
            Err(GgufError::Truncated { .. })
        ));
        assert!(matches!(parse_bytes(b""), Err(GgufError::Truncated { .. })));
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        // A string claiming 2^62 bytes.
        let mut entry = Vec::new();
        entry.extend_from_slice(&4u64.to_le_bytes());
        entry.extend_from_slice(b"name");
        entry.extend_from_slice(&8u32.to_le_bytes());
        entry.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let mut w = Writer::sample();
        w.raw_entry(&entry);
        let err = parse_bytes(&w.build()).unwrap_err();
        assert!(matches!(err, GgufError::Malformed { .. }), "{err:?}");

        // An array claiming 2^61 u64 elements (the byte count overflows).
        let mut entry = Vec::new();
        entry.extend_from_slice(&1u64.to_le_bytes());
        entry.extend_from_slice(b"a");
        entry.extend_from_slice(&9u32.to_le_bytes());
        entry.extend_from_slice(&10u32.to_le_bytes());
        entry.extend_from_slice(&(1u64 << 61).to_le_bytes());
        let mut w = Writer::sample();
        w.raw_entry(&entry);
        assert!(matches!(
            parse_bytes(&w.build()),
            Err(GgufError::Malformed { .. })
        ));

        // A string array claiming u64::MAX strings.
        let mut entry = Vec::new();
        entry.extend_from_slice(&1u64.to_le_bytes());
        entry.extend_from_slice(b"a");
        entry.extend_from_slice(&9u32.to_le_bytes());
        entry.extend_from_slice(&8u32.to_le_bytes());
        entry.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut w = Writer::sample();
        w.raw_entry(&entry);
        assert!(matches!(
            parse_bytes(&w.build()),
            Err(GgufError::Malformed { .. })
        ));

        // Counts in the fixed header that cannot fit in the file.
        let mut bytes = Writer::sample().build();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_bytes(&bytes),
            Err(GgufError::Malformed { .. })
        ));
        let mut bytes = Writer::sample().build();
        bytes[16..24].copy_from_slice(&1000u64.to_le_bytes());
        assert!(matches!(
            parse_bytes(&bytes),
            Err(GgufError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_tensor_infos_are_malformed() {
        let mut w = Writer::sample();
        w.tensor("bad", &[7], 8); // Q8_0 needs multiples of 32
        let err = parse_bytes(&w.build()).unwrap_err();
        assert!(err.to_string().contains("tensor 'bad'"), "{err}");

        let mut w = Writer::default();
        w.tensor("x", &[4], 0);
        let mut bytes = w.build();
        // type id sits after name (8 + 1), n_dims (4), one dim (8)
        let at = 24 + 9 + 4 + 8;
        bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        let err = parse_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("unknown tensor type 99"), "{err}");

        let mut w = Writer::default();
        w.int("general.alignment", 4, &3u32.to_le_bytes());
        assert!(parse_bytes(&w.build())
            .unwrap_err()
            .to_string()
            .contains("power of two"));
    }

    #[test]
    fn deep_array_nesting_is_refused() {
        let mut entry = Vec::new();
        entry.extend_from_slice(&1u64.to_le_bytes());
        entry.extend_from_slice(b"a");
        entry.extend_from_slice(&9u32.to_le_bytes());
        for _ in 0..10 {
            entry.extend_from_slice(&9u32.to_le_bytes());
            entry.extend_from_slice(&1u64.to_le_bytes());
        }
        entry.extend_from_slice(&[0u8; 64]);
        let mut w = Writer::default();
        w.raw_entry(&entry);
        let err = parse_bytes(&w.build()).unwrap_err();
        assert!(err.to_string().contains("too deeply"), "{err}");
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        // A tiny xorshift keeps this test free of dependencies (the engine compiles this file).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = Writer::sample().build();
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 512)).map(|_| next() as u8).collect()
            };
            if round % 2 == 1 && bytes.len() >= 4 && round % 4 == 1 {
                bytes[..4].copy_from_slice(b"GGUF");
            }
            if !bytes.is_empty() {
                for _ in 0..(1 + next() % 4) {
                    let i = (next() % bytes.len() as u64) as usize;
                    bytes[i] = next() as u8;
                }
            }
            let _ = parse_bytes(&bytes);
        }
    }

    #[test]
    fn a_git_lfs_pointer_is_named_with_the_fix() {
        let pointer = b"version https://git-lfs.example/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 253113024\n";
        let err = parse(
            io::Cursor::new(&pointer[..]),
            pointer.len() as u64,
            Path::new("/m/g.gguf"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            GgufError::LfsPointer {
                path: "/m/g.gguf".into(),
                size: Some(253113024)
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("/m/g.gguf")
                && text.contains("git lfs pull")
                && text.contains("253113024"),
            "{text}"
        );
        // Text that only starts like one is not a pointer.
        assert_eq!(lfs_pointer(b"version 2 of my notes\n"), None);
        assert_eq!(lfs_pointer(b"version https://x/spec/v1\nno oid\n"), None);
        assert_eq!(
            lfs_pointer(b"version https://x/spec/v1\noid sha256:ab\n"),
            Some(None)
        );
        let err = parse(
            io::Cursor::new(&b"version 2 of my notes\n"[..]),
            22,
            Path::new("n"),
        )
        .unwrap_err();
        assert!(matches!(err, GgufError::NotGguf { .. }), "{err:?}");
    }

    #[test]
    fn inspect_names_missing_files_and_folders() {
        let missing = Path::new("/nonexistent/dir/model.gguf");
        let err = inspect(missing).unwrap_err();
        assert_eq!(
            err,
            GgufError::Missing {
                path: missing.into()
            }
        );
        assert!(err.to_string().contains("/nonexistent/dir/model.gguf"));
        let err = inspect(&std::env::temp_dir()).unwrap_err();
        assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
    }
}
