//! `--image_file`, as gemma.cpp handles it: only a model that sees takes one (PaliGemma 2,
//! Gemma 3 4B and larger; any other aborts on an assert when it starts), the file must be a
//! binary PPM (`P6`, maxval 255, exactly width × height × 3 bytes of pixels) or loading aborts,
//! the image is encoded once at start (a Timing line on stderr says how long it took), and its
//! tokens go into the prompt only at position 0: the first turn of the process, or the first
//! after `%c`. A later turn of the same dialog sees it through the KV cache, not again.
//!
//! So that tests can see the bytes arrived, the magic word `IMAGE` makes the reply report the
//! image the process holds: its size and the sum of its pixel bytes.

use crate::fatal;

/// An image gemma.cpp read at start.
pub struct Loaded {
    pub width: usize,
    pub height: usize,
    /// Sum of the pixel bytes (R, G and B of every pixel).
    pub pixel_sum: u64,
    /// Image tokens put into the prompt at position 0.
    pub tokens: usize,
}

/// Reads `path` for the model named by `specifier`, dying the way gemma.cpp does when it cannot.
pub fn load(path: &str, specifier: &str) -> Loaded {
    let tokens = match vision_tokens(specifier) {
        Some(n) => n,
        None => fatal(
            "run.cc:105",
            "Assert config.wrapping == PromptWrapping::PALIGEMMA || config.wrapping == PromptWrapping::GEMMA_VLM",
        ),
    };
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("Failed to open {path}");
        fatal(
            "run.cc:111",
            "Assert image.ReadPPM(inference.image_file.path)",
        );
    };
    match parse_ppm(&bytes) {
        Ok((width, height, pixels)) => Loaded {
            width,
            height,
            pixel_sum: pixels.iter().map(|&b| b as u64).sum(),
            tokens,
        },
        Err(why) => {
            eprintln!("{why}");
            fatal(
                "run.cc:111",
                "Assert image.ReadPPM(inference.image_file.path)",
            );
        }
    }
}

/// Image tokens per image for the models that see: Gemma 3's 256, PaliGemma 2's 256 at 224
/// pixels and 1024 at 448.
fn vision_tokens(specifier: &str) -> Option<usize> {
    if specifier.starts_with("paligemma2-") {
        return Some(if specifier.contains("-448") {
            1024
        } else {
            256
        });
    }
    ["gemma3-4b", "gemma3-12b", "gemma3-27b"]
        .iter()
        .any(|m| specifier.starts_with(m))
        .then_some(256)
}

/// A binary PPM: the header's fields separated by whitespace, one whitespace byte after the
/// maxval, then the pixels.
fn parse_ppm(bytes: &[u8]) -> Result<(usize, usize, &[u8]), String> {
    if !bytes.starts_with(b"P6") {
        return Err("Invalid PPM format: expected P6".into());
    }
    let mut at = 2;
    let mut field = || -> Result<usize, String> {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        std::str::from_utf8(&bytes[start..at])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "Invalid PPM header".to_string())
    };
    let (width, height, max) = (field()?, field()?, field()?);
    if max != 255 {
        return Err(format!(
            "Invalid PPM max value {max}: only 255 is supported"
        ));
    }
    if width == 0 || height == 0 {
        return Err("Invalid PPM dimensions".into());
    }
    let pixels = bytes
        .get(at + 1..)
        .filter(|p| p.len() >= width * height * 3)
        .ok_or_else(|| "Failed to read PPM pixel data".to_string())?;
    Ok((width, height, &pixels[..width * height * 3]))
}
