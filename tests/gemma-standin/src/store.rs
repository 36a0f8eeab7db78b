//! Opening the weights file the way gemma.cpp does, with its exact failure output: the
//! `Abort at io.cc:199` for a file that cannot be opened, the two BlobStore-magic warnings and the
//! abort for a file that is not a BlobStore, and the tokenizer warning plus a missing-tensor abort
//! for a pre-2025 file run without `--tokenizer`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::fatal;

const MAGIC: u32 = 0x0A53_4253;

/// What the stand-in needs to know about the weights.
pub struct Weights {
    /// The model specifier printed on the `Model` config line.
    pub specifier: String,
    /// Whether the chat template wraps prompts (`-it` files, or pre-2025 files without
    /// `--wrapping 0`).
    pub wrapping: bool,
    pub weight_type: String,
}

pub fn open(weights: &str, tokenizer: Option<&str>, wrapping_flag: Option<bool>) -> Weights {
    let Ok(mut file) = File::open(weights) else {
        fatal("io.cc:199", &format!("Failed to open {weights}"));
    };
    let keys = match read_keys(&mut file) {
        Ok(k) => k,
        Err(magics) => {
            for (line, magic) in [(120, magics.0), (148, magics.1)] {
                eprintln!("Warn at blob_store.cc:{line}: BlobStore header magic {magic:08x} does not match 0a534253.");
            }
            fatal(
                "blob_store.cc:227",
                "Failed to read BlobStore header or directory.",
            );
        }
    };
    if let Some(config) = keys.iter().find(|(k, _, _)| k == "config") {
        let specifier = read_specifier(&mut file, config.1, config.2)
            .unwrap_or_else(|| "gemma3-270m-sfp-it".to_string());
        let weight_type = ["bf16", "f32", "sfp", "nuq"]
            .iter()
            .find(|t| specifier.contains(&format!("-{t}")))
            .unwrap_or(&"sfp")
            .to_string();
        let wrapping = wrapping_flag.unwrap_or(!specifier.ends_with("-pt"));
        return Weights {
            specifier,
            wrapping,
            weight_type,
        };
    }
    // Pre-2025 multi-file weights.
    match tokenizer {
        None => {
            eprintln!("Warn at model_store.cc:95: BlobStore does not contain a tokenizer and no --tokenizer was specified. Tests may continue but inference will fail.");
            fatal(
                "weights.cc:312",
                "Tensor key_norm_0 is required but not found in file.",
            );
        }
        Some(t) => {
            if File::open(t).is_err() {
                fatal("io.cc:199", &format!("Failed to open {t}"));
            }
        }
    }
    let weight_type = match keys
        .iter()
        .max_by_key(|(_, _, size)| *size)
        .and_then(|(k, _, _)| k.chars().next())
    {
        Some('F') => "f32",
        Some('B') => "bf16",
        Some('2') => "nuq",
        _ => "sfp",
    };
    Weights {
        specifier: format!("gemma3-270m-{weight_type}-it"),
        wrapping: wrapping_flag.unwrap_or(true),
        weight_type: weight_type.to_string(),
    }
}

/// A directory entry: key, offset, size.
type Entry = (String, u64, u64);

/// The directory's keys with offset and size; on failure the two magics that did not match.
fn read_keys(file: &mut File) -> Result<Vec<Entry>, (u32, u32)> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let head = read_at(file, 0, 16).unwrap_or_default();
    let tail = if len >= 16 {
        read_at(file, len - 16, 16).unwrap_or_default()
    } else {
        Vec::new()
    };
    let word = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .unwrap_or(0)
    };
    let (m1, m2) = (word(&head, 0), word(&tail, 0));
    let (count, dir_start) = if m1 == MAGIC && word(&head, 4) != 0 {
        (word(&head, 4) as u64, 16)
    } else if m2 == MAGIC {
        let n = word(&tail, 4) as u64;
        (n, (len - 16).checked_sub(n * 32).ok_or((m1, m2))?)
    } else {
        return Err((m1, m2));
    };
    if count > 16384 {
        return Err((m1, m2));
    }
    let dir = read_at(file, dir_start, (count * 32) as usize).ok_or((m1, m2))?;
    let n = count as usize;
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = &dir[i * 16..i * 16 + 16];
        let end = key.iter().position(|b| *b == 0).unwrap_or(16);
        let at = n * 16 + i * 16;
        let offset = u64::from_le_bytes(dir[at..at + 8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(dir[at + 8..at + 16].try_into().unwrap_or_default());
        if !matches!(offset.checked_add(size), Some(end) if end <= len) {
            fatal(
                "blob_store.cc:227",
                "Failed to read BlobStore header or directory.",
            );
        }
        keys.push((
            String::from_utf8_lossy(&key[..end]).into_owned(),
            offset,
            size,
        ));
    }
    Ok(keys)
}

fn read_specifier(file: &mut File, offset: u64, size: u64) -> Option<String> {
    let bytes = read_at(file, offset, size.min(65536) as usize)?;
    let at = bytes.windows(5).position(|w| w == b"gemma").map(|i| {
        if i >= 4 && &bytes[i - 4..i] == b"pali" {
            i - 4
        } else {
            i
        }
    })?;
    let spec: String = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
        .map(|b| *b as char)
        .collect();
    Some(spec)
}

fn read_at(file: &mut File, offset: u64, len: usize) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).ok()?;
    Some(buf)
}
