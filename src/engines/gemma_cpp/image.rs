//! Images on gemma.cpp: it takes one image per process start (`--image_file`, a binary PPM),
//! and only on the models that see — PaliGemma 2 and Gemma 3 4B and larger. Which model a
//! process runs is the specifier its weights' config names (e.g. `gemma3-4b-sfp-it`), so that
//! is what decides; every other model is refused before anything starts.
//!
//! The image is converted to PPM (image-input) into a file of its own in a private temporary
//! folder (mode 0700, the file 0600), kept while a process uses it and removed after. gemma.cpp
//! puts the image's tokens into the prompt only at position 0, so one process can show one image
//! to one conversation: a conversation with two different images is refused, and a request
//! whose image differs from the running process's restarts it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::domain::{Image, Message};

/// Whether gemma.cpp can show images to the model `specifier` names.
pub(super) fn sees(specifier: &str) -> bool {
    specifier.starts_with("paligemma")
        || ["gemma3-4b", "gemma3-12b", "gemma3-27b"]
            .iter()
            .any(|m| specifier.starts_with(m))
}

/// Most image tokens gemma.cpp may put in a prompt for `specifier`: PaliGemma 2 at 448 pixels
/// 1024, the others 256; and a few for the markers around them.
pub(super) fn tokens_bound(specifier: &str) -> u64 {
    let tokens = if specifier.starts_with("paligemma") && specifier.contains("-448") {
        1024
    } else {
        256
    };
    tokens + 8
}

/// The one image of a conversation, if it has any; a second, different one is refused with
/// the sentence to show.
pub(super) fn of_conversation(messages: &[Message]) -> Result<Option<Image>, String> {
    let mut found: Option<&Image> = None;
    for image in messages.iter().flat_map(|m| &m.images) {
        match found {
            None => found = Some(image),
            Some(first) if first.sha256 == image.sha256 => {}
            Some(first) => {
                return Err(format!(
                    "gemma.cpp shows a model one image per conversation, and this one has two different images ({} and {}): start a new conversation for the second image, or use a GGUF vision model on gemma-engine",
                    first.label(),
                    image.label()
                ))
            }
        }
    }
    Ok(found.cloned())
}

/// An image converted for `--image_file`, removed when dropped.
pub(super) struct PpmFile {
    /// The private folder; dropping it removes the file.
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// SHA-256 of the image it was made from.
    pub(super) sha256: String,
}

impl PpmFile {
    /// Converts `image` to PPM in a new private folder.
    pub(super) fn write(image: &Image) -> Result<PpmFile, String> {
        let label = image.label();
        let bytes = image
            .bytes()
            .map_err(|e| format!("image {label} cannot be read again ({e}): attach it again"))?;
        let rgb = image_input::decode_rgb(&bytes).map_err(|e| format!("image {label} {e}"))?;
        let failed = |e: std::io::Error| {
            format!("cannot write image {label} as PPM for gemma.cpp to a temporary folder ({e}): check that TMPDIR is writable and has room")
        };
        // The folder 0700 and the file 0600: no other user reads the image.
        let dir = tempfile::Builder::new()
            .prefix("gemmactl-image-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(failed)?;
        let path = dir.path().join("image.ppm");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        file.write_all(&image_input::to_ppm(&rgb))
            .and_then(|_| file.sync_all())
            .map_err(failed)?;
        Ok(PpmFile {
            _dir: dir,
            path,
            sha256: image.sha256.clone(),
        })
    }

    /// The file to pass as `--image_file`.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn png(shade: u8) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        ::image::RgbImage::from_pixel(4, 3, ::image::Rgb([shade, 2, 3]))
            .write_to(&mut out, ::image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn only_the_models_that_see_take_images() {
        for m in [
            "gemma3-4b-sfp-it",
            "gemma3-27b-bf16-it",
            "paligemma2-3b-448-sfp",
        ] {
            assert!(sees(m), "{m}");
        }
        for m in ["gemma3-270m-sfp-it", "gemma3-1b-sfp-it", "gemma2-2b-sfp-it"] {
            assert!(!sees(m), "{m}");
        }
    }

    #[test]
    fn a_conversation_holds_one_image_however_often_it_is_shown() {
        let a = Image::from_bytes(png(1), "image a").unwrap();
        let b = Image::from_bytes(png(2), "image b").unwrap();
        let m = |images: Vec<Image>| Message::new(Role::User, "look").with_images(images);
        let twice = [m(vec![a.clone()]), m(vec![a.clone()])];
        assert_eq!(
            of_conversation(&twice).unwrap().map(|i| i.sha256),
            Some(a.sha256.clone())
        );
        let err = of_conversation(&[m(vec![a]), m(vec![b])]).unwrap_err();
        assert!(err.contains("two different images"), "{err}");
    }

    #[test]
    fn the_ppm_is_private_and_removed_after() {
        use std::os::unix::fs::PermissionsExt;
        let image = Image::from_bytes(png(9), "image").unwrap();
        let ppm = PpmFile::write(&image).unwrap();
        let path = ppm.path().to_path_buf();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"P6\n4 3\n255\n"), "{:?}", &bytes[..12]);
        assert_eq!(bytes.len(), 11 + 4 * 3 * 3);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(ppm);
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }
}
