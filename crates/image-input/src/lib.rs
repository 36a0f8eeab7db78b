//! Images attached to a message: what they are, whether they are safe to decode, their pixels.
//!
//! gemmactl and gemma-engine both take images from users, so both use this one crate for the
//! same answers: the format comes from the file's first bytes (not its name), the dimensions from
//! its header, and both are checked against caps **before** any pixel is decoded, so a small file
//! that claims a huge canvas (a decompression bomb) is refused without allocating it. Decoding is
//! the `image` crate's, bounded by the same caps.

use std::fmt;
use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// Largest image file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels (width × height) accepted: 64 megapixels, 192 MiB as RGB.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;
/// Most memory the decoder may allocate, in bytes (RGBA of the largest image, and some).
const MAX_DECODER_ALLOC: u64 = 320 * 1024 * 1024;

/// What an image file is, read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// Its IANA media type (`image/png`, `image/jpeg`, …).
    pub media_type: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// An image decoded to 8-bit RGB, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub pixels: Vec<u8>,
}

/// Why an image cannot be used. Its `Display` is the end of a sentence that begins with the
/// image's name (`"photo.png {error}"`), so callers name the file their own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The bytes are no image format known here.
    NotAnImage,
    /// A known image format that is not supported (e.g. AVIF, HEIC, SVG).
    Unsupported(String),
    /// The file itself is over [`MAX_FILE_BYTES`].
    FileTooLarge(u64),
    /// The header claims more pixels than allowed.
    TooManyPixels {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
    },
    /// The header or the pixel data is cut short or malformed.
    Corrupt(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotAnImage => write!(
                f,
                "is not an image: give a PNG, JPEG, WebP, GIF, BMP, PNM or TIFF file"
            ),
            ImageError::Unsupported(what) => write!(
                f,
                "is {what}, which is not supported: convert it to PNG or JPEG"
            ),
            ImageError::FileTooLarge(bytes) => write!(
                f,
                "is {} MiB, over the {} MiB an image may be: shrink or recompress it",
                bytes.div_ceil(1024 * 1024),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
            ImageError::TooManyPixels { width, height } => write!(
                f,
                "claims {width}×{height} pixels, over the limit of {MAX_SIDE} per side and {} megapixels: resize it",
                MAX_PIXELS / (1024 * 1024)
            ),
            ImageError::Corrupt(why) => write!(
                f,
                "is a damaged or cut-short image ({why}): save or download it again"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// The media type of an encoded image, from its first bytes, or why it is not one we take.
pub fn media_type(bytes: &[u8]) -> Result<&'static str, ImageError> {
    format_of(bytes).map(|f| f.to_mime_type())
}

/// Recognises an image and reads its dimensions without decoding it, checking both against the
/// caps.
pub fn inspect(bytes: &[u8]) -> Result<Inspected, ImageError> {
    let format = format_of(bytes)?;
    let (width, height) = reader(bytes, format)
        .into_dimensions()
        .map_err(from_image_error)?;
    check_dimensions(width, height)?;
    Ok(Inspected {
        media_type: format.to_mime_type(),
        width,
        height,
    })
}

/// Decodes an image to RGB (an alpha channel is dropped, greys are widened), after
/// [`inspect`]'s checks.
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb, ImageError> {
    let format = inspect(bytes).map(|_| format_of(bytes))??;
    let image = reader(bytes, format).decode().map_err(from_image_error)?;
    let rgb = image.into_rgb8();
    Ok(Rgb {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// The image as a binary PPM (Netpbm `P6`, maxval 255): the only format gemma.cpp reads.
pub fn to_ppm(image: &Rgb) -> Vec<u8> {
    let header = format!("P6\n{} {}\n255\n", image.width, image.height);
    let mut out = Vec::with_capacity(header.len() + image.pixels.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&image.pixels);
    out
}

/// SHA-256 of the bytes, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn format_of(bytes: &[u8]) -> Result<ImageFormat, ImageError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ImageError::FileTooLarge(bytes.len() as u64));
    }
    if let Some(what) = unsupported_kind(bytes) {
        return Err(ImageError::Unsupported(what.to_string()));
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::NotAnImage)?;
    if !format.reading_enabled() {
        return Err(ImageError::Unsupported(format!(
            "a {} image",
            format.extensions_str().first().copied().unwrap_or("such")
        )));
    }
    Ok(format)
}

/// Image formats people send that the `image` crate does not recognise at all, so they get a
/// better sentence than "not an image".
fn unsupported_kind(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(64)];
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let major = &head[8..12];
        if major == b"avif" || major == b"avis" {
            return Some("an AVIF image");
        }
        if [&b"heic"[..], b"heix", b"mif1", b"msf1", b"hevc"].contains(&major) {
            return Some("a HEIC/HEIF image");
        }
    }
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start();
    if text.starts_with("<svg") || (text.starts_with("<?xml") && text.contains("svg")) {
        return Some("an SVG drawing");
    }
    None
}

fn reader(bytes: &[u8], format: ImageFormat) -> ImageReader<Cursor<&[u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    reader
}

fn check_dimensions(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!("{width}×{height} pixels")));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooManyPixels { width, height });
    }
    Ok(())
}

fn from_image_error(e: image::ImageError) -> ImageError {
    use image::error::{ImageError as E, LimitErrorKind};
    match e {
        E::Limits(l) => match l.kind() {
            LimitErrorKind::DimensionError => ImageError::TooManyPixels {
                width: MAX_SIDE + 1,
                height: MAX_SIDE + 1,
            },
            _ => {
                ImageError::Corrupt("it needs more memory to decode than an image may take".into())
            }
        },
        E::Unsupported(u) => {
            ImageError::Unsupported(format!("an image whose encoding is unsupported ({u})"))
        }
        E::IoError(io) => ImageError::Corrupt(io.to_string()),
        other => ImageError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb as Px};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(width, height, |x, y| Px([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_png_is_recognised_measured_and_decoded() {
        let bytes = png(5, 3);
        let seen = inspect(&bytes).unwrap();
        assert_eq!(
            seen,
            Inspected {
                media_type: "image/png",
                width: 5,
                height: 3
            }
        );
        let rgb = decode_rgb(&bytes).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.pixels.len()), (5, 3, 45));
        assert_eq!(&rgb.pixels[3 * 4..3 * 5], &[4, 0, 7]);
        let ppm = to_ppm(&rgb);
        assert!(ppm.starts_with(b"P6\n5 3\n255\n"));
        assert_eq!(ppm.len(), 11 + 45);
        // The PPM decodes back to the same pixels.
        assert_eq!(decode_rgb(&ppm).unwrap(), rgb);
    }

    #[test]
    fn text_a_truncated_file_and_unsupported_formats_are_refused_with_their_reason() {
        assert_eq!(inspect(b"hello, world"), Err(ImageError::NotAnImage));
        assert_eq!(inspect(b""), Err(ImageError::NotAnImage));
        let bytes = png(64, 64);
        let cut = &bytes[..bytes.len() / 2];
        assert!(
            matches!(decode_rgb(cut), Err(ImageError::Corrupt(_))),
            "{:?}",
            decode_rgb(cut)
        );
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf";
        assert!(matches!(inspect(avif), Err(ImageError::Unsupported(w)) if w.contains("AVIF")));
        let svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>";
        assert!(matches!(inspect(svg), Err(ImageError::Unsupported(w)) if w.contains("SVG")));
        let e = inspect(b"hello").unwrap_err().to_string();
        assert!(e.starts_with("is not an image: "), "{e}");
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_before_decoding() {
        // A valid PNG header claiming 60000×60000 pixels with almost no data behind it.
        let mut bytes = png(1, 1);
        // IHDR's width and height are the 4+4 bytes after "IHDR" (offset 16); its CRC must
        // then match, so recompute it.
        bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(inspect(&bytes), Err(ImageError::TooManyPixels { .. })),
            "{:?}",
            inspect(&bytes)
        );
        assert!(matches!(
            decode_rgb(&bytes),
            Err(ImageError::TooManyPixels { .. })
        ));
        // Within each side's cap but over the pixel cap.
        assert_eq!(
            check_dimensions(16_000, 16_000),
            Err(ImageError::TooManyPixels {
                width: 16_000,
                height: 16_000
            })
        );
        assert!(check_dimensions(4000, 3000).is_ok());
    }

    #[test]
    fn the_fingerprint_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
