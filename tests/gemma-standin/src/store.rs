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
    /// The model specifier printed on the `Model` config line (e.g. `gemma3-270m-bf16-pt`).
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
        let Some((model, weight_type, pretrained)) = read_config(&mut file, config.1, config.2)
        else {
            fatal(
                "model_store.cc:263",
                "Assert result.pos != 0: Error deserializing config",
            );
        };
        // A single-file model's config decides the wrapping; --wrapping is ignored.
        let _ = wrapping_flag;
        return Weights {
            specifier: format!(
                "{model}-{weight_type}{}",
                if pretrained { "-pt" } else { "-it" }
            ),
            wrapping: !pretrained,
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

/// The model, weight type and whether the wrapping is pretrained (`GEMMA_PT`), from gemma.cpp's
/// serialized `ModelConfig`: u32 words — the record's length, the family version, the display
/// name (its length in words, then the words), then the model, wrapping and weight enums.
fn read_config(file: &mut File, offset: u64, size: u64) -> Option<(&'static str, String, bool)> {
    let bytes = read_at(file, offset, size.min(1 << 20) as usize)?;
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let name_words = *words.get(2)? as usize;
    let at = 3 + name_words;
    let (model, wrapping, weight) = (*words.get(at)?, *words.get(at + 1)?, *words.get(at + 2)?);
    let model = match model {
        3 => "9b",
        4 => "27b",
        7 => "gemma2-2b",
        10 => "paligemma2-3b-224",
        11 => "paligemma2-3b-448",
        12 => "paligemma2-10b-224",
        13 => "paligemma2-10b-448",
        14 => "gemma3-4b",
        15 => "gemma3-1b",
        16 => "gemma3-12b",
        17 => "gemma3-27b",
        18 => "gemma3-270m",
        _ => return None,
    };
    let weight = [
        "unknown", "f32", "bf16", "sfp", "nuq", "f64", "u32", "u64", "i8",
    ]
    .get(weight as usize)?
    .to_string();
    (wrapping < 4).then_some((model, weight, wrapping == 1))
}

fn read_at(file: &mut File, offset: u64, len: usize) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).ok()?;
    Some(buf)
}
