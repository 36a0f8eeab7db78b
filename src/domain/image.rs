//! An image attached to a message: where it stands in the text, where its bytes are, and what
//! it is (media type, size, SHA-256, width × height).
//!
//! Every front end builds attachments here — [`Image::from_file`] for a path the user gave,
//! [`Image::from_bytes`] for bytes that came inline (a data URL, base64 in an MCP call or a batch
//! line) — so every image is checked the same way before anything is stored or an engine is
//! started: recognised from its first bytes, its header checked against the size caps (a
//! decompression bomb is refused without being decoded), then decoded once, so a cut-short file
//! is refused here rather than by the engine. Errors are one sentence that names the image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An image attached to a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// Byte offset into the message's text (on a character boundary): the image comes after
    /// `content[..at]`.
    pub at: usize,
    /// The file the user gave, absolute; `None` for bytes given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The history's copy in the data folder (named by SHA-256), once stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<PathBuf>,
    /// The bytes, while they are in no file (given inline, not stored): base64 in JSON.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub data: Option<Arc<Vec<u8>>>,
    /// Its media type, from its first bytes (e.g. `image/png`).
    pub media_type: String,
    /// Size of the encoded file, in bytes.
    pub size: u64,
    /// SHA-256 of the encoded file, 64 lowercase hex digits.
    pub sha256: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why an image cannot be attached, as one sentence naming it and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImageRefused(pub String);

impl Image {
    /// The image in file `path` (made absolute from the working folder), checked and read.
    pub fn from_file(path: &Path) -> Result<Image, ImageRefused> {
        let name = path.display().to_string();
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let meta = std::fs::metadata(&absolute).map_err(|e| {
            ImageRefused(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("image {name} does not exist: check the path")
                }
                _ => format!("image {name} cannot be read ({e}): check its permissions"),
            })
        })?;
        if meta.is_dir() {
            return Err(ImageRefused(format!(
                "image {name} is a folder: give an image file"
            )));
        }
        // Checked before reading, so a huge file is not read into memory to be refused.
        let label = format!("image {name}");
        if meta.len() > image_input::MAX_FILE_BYTES {
            return Err(refused(
                &label,
                image_input::ImageError::FileTooLarge(meta.len()),
            ));
        }
        let bytes = std::fs::read(&absolute).map_err(|e| {
            ImageRefused(format!(
                "image {name} cannot be read ({e}): check its permissions"
            ))
        })?;
        let mut image = Image::checked(&bytes, &label)?;
        image.path = Some(absolute);
        Ok(image)
    }

    /// Bytes given inline, checked; `name` begins the sentence of an error (e.g. `image 1 of
    /// message 2`, ``argument `image_data` ``).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Image, ImageRefused> {
        let mut image = Image::checked(&bytes, name)?;
        image.data = Some(Arc::new(bytes));
        Ok(image)
    }

    /// An image given as text: a `data:` URL with base64 content (`data:image/png;base64,…`),
    /// or bare base64. `name` says where it came from in the sentence of an error.
    pub fn from_base64(text: &str, name: &str) -> Result<Image, ImageRefused> {
        use base64::Engine as _;
        let text = text.trim();
        let payload = match text.strip_prefix("data:") {
            Some(rest) => {
                let (header, data) = rest.split_once(',').ok_or_else(|| {
                    ImageRefused(format!(
                        "{name} is a data URL without a comma before its data: write it as data:image/png;base64,…"
                    ))
                })?;
                if !header.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
                    return Err(ImageRefused(format!(
                        "{name} is a data URL that is not base64: write it as data:image/png;base64,…"
                    )));
                }
                data
            }
            None => text,
        };
        // Line breaks inside base64 are common (MIME wraps at 76 columns) and mean nothing.
        let compact: String = payload
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| {
                ImageRefused(format!(
                    "{name} is not valid base64 ({e}): send the image file's bytes base64-encoded (standard alphabet, padded)"
                ))
            })?;
        Image::from_bytes(bytes, name)
    }

    fn checked(bytes: &[u8], name: &str) -> Result<Image, ImageRefused> {
        let inspected = image_input::inspect(bytes).map_err(|e| refused(name, e))?;
        // The header alone does not show a file cut short: decode it once (bounded by the same
        // caps) so the engine is never handed an image it cannot read.
        image_input::decode_rgb(bytes).map_err(|e| refused(name, e))?;
        Ok(Image {
            at: 0,
            path: None,
            copy: None,
            data: None,
            media_type: inspected.media_type.to_string(),
            size: bytes.len() as u64,
            sha256: image_input::sha256_hex(bytes),
            width: inspected.width,
            height: inspected.height,
        })
    }

    /// The image placed at byte `at` of its message's text.
    pub fn placed(mut self, at: usize) -> Image {
        self.at = at;
        self
    }

    /// The file an engine should read: the history's copy (it cannot have changed since), else
    /// the user's file; `None` when the bytes are only in memory.
    pub fn file(&self) -> Option<&Path> {
        self.copy.as_deref().or(self.path.as_deref())
    }

    /// The encoded bytes: from memory, else from [`Image::file`].
    pub fn bytes(&self) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(data) = &self.data {
            return Ok(data.clone());
        }
        match self.file() {
            Some(file) => std::fs::read(file).map(Arc::new),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the image has neither bytes nor a file",
            )),
        }
    }

    /// How people refer to it: its file's name, else `image <first 12 hex digits of SHA-256>`.
    pub fn label(&self) -> String {
        match &self.path {
            Some(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            None => format!("image {}", &self.sha256[..self.sha256.len().min(12)]),
        }
    }

    /// One line describing it: `cat.png, image/png, 12.3 KiB, 640×480`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {}, {}, {}×{}",
            self.label(),
            self.media_type,
            human_size(self.size),
            self.width,
            self.height
        )
    }
}

/// The sentence for `err` about the image called `name`.
fn refused(name: &str, err: image_input::ImageError) -> ImageRefused {
    ImageRefused(format!("{name} {err}"))
}

/// Bytes as people read them: `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

/// The sentence for an image sent to a model that cannot see.
pub fn cannot_see(model: &str) -> String {
    format!("{model} cannot see images: register a vision model with --mmproj, see README")
}

mod base64_bytes {
    use std::sync::Arc;

    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        data: &Option<Arc<Vec<u8>>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match data {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
            }
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<Vec<u8>>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map(Arc::new)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real PNG, written by the `image` crate through image-input's own decoder's sibling.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let pixels = ::image::RgbImage::from_fn(width, height, |x, y| {
            ::image::Rgb([(x * 7) as u8, (y * 13) as u8, 99])
        });
        pixels
            .write_to(&mut out, ::image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn a_file_is_described_and_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cat.png");
        let bytes = png(5, 3);
        std::fs::write(&path, &bytes).unwrap();
        let image = Image::from_file(&path).unwrap();
        assert_eq!(image.media_type, "image/png");
        assert_eq!((image.width, image.height), (5, 3));
        assert_eq!(image.size, bytes.len() as u64);
        assert_eq!(image.sha256, image_input::sha256_hex(&bytes));
        assert_eq!(image.path.as_deref(), Some(path.as_path()));
        assert!(
            image.summary().starts_with("cat.png, image/png, "),
            "{}",
            image.summary()
        );
        assert!(image.summary().ends_with(", 5×3"));
    }

    #[test]
    fn bad_files_get_one_sentence_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.png");
        let err = Image::from_file(&missing).unwrap_err().0;
        assert_eq!(
            err,
            format!("image {} does not exist: check the path", missing.display())
        );
        let text = dir.path().join("notes.png");
        std::fs::write(&text, "just some words").unwrap();
        let err = Image::from_file(&text).unwrap_err().0;
        assert!(
            err.starts_with(&format!("image {} is not an image", text.display())),
            "{err}"
        );
        let cut = dir.path().join("cut.png");
        let whole = png(64, 64);
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let err = Image::from_file(&cut).unwrap_err().0;
        assert!(err.contains("damaged or cut-short"), "{err}");
    }

    #[test]
    fn inline_bytes_round_trip_through_json_as_base64() {
        let image = Image::from_bytes(png(2, 2), "image 1").unwrap().placed(4);
        let json = serde_json::to_value(&image).unwrap();
        assert!(
            json["data"].as_str().unwrap().starts_with("iVBOR"),
            "{json}"
        );
        let back: Image = serde_json::from_value(json).unwrap();
        assert_eq!(back, image);
        let err = Image::from_bytes(b"GIF89a".to_vec(), "image 2 of the request")
            .unwrap_err()
            .0;
        assert!(err.starts_with("image 2 of the request is "), "{err}");
    }

    #[test]
    fn data_urls_and_bare_base64_are_read_and_bad_ones_named() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(png(3, 2));
        let url = Image::from_base64(&format!("data:image/png;base64,{b64}"), "image 1").unwrap();
        let bare = Image::from_base64(&b64, "image 1").unwrap();
        assert_eq!(url, bare);
        assert_eq!((url.width, url.height), (3, 2));
        let err = Image::from_base64("data:image/png;base64,@@@@", "image 1 of message 1")
            .unwrap_err()
            .0;
        assert!(
            err.starts_with("image 1 of message 1 is not valid base64"),
            "{err}"
        );
        let err = Image::from_base64("data:text/plain,hello", "image 1")
            .unwrap_err()
            .0;
        assert!(err.contains("not base64"), "{err}");
        let text = base64::engine::general_purpose::STANDARD.encode("hello, world");
        let err = Image::from_base64(&text, "image 1").unwrap_err().0;
        assert!(err.starts_with("image 1 is not an image"), "{err}");
    }
}
