//! A message's content as OpenAI's chat format writes it — a string, or a list of parts
//! (`{"type": "text", "text": …}`, `{"type": "image_url", "image_url": {"url": …}}`) — read into
//! gemmactl's text and placed images. The batch front end and the HTTP API both take this
//! format, so both read it here and say the same sentence for the same mistake.
//!
//! An image URL is a `data:` URL (base64), or — where the caller allows it — a local file, as a
//! `file:` URL or a path. Remote URLs are never fetched: gemmactl reaches no network for a
//! prompt. The HTTP server refuses local files by default, since a network client must not
//! make the server read its files.

use std::path::PathBuf;

use serde_json::Value;

use crate::domain::Image;

/// Whether an image may name a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFiles {
    /// Files are the caller's own (a batch file run by its user).
    Allowed,
    /// Only data URLs (the HTTP API without `--allow-local-images`); the sentence says how to
    /// allow them.
    Refused {
        /// How to allow them, for the sentence.
        how: &'static str,
    },
}

/// Text parts joined with `separator` and images placed where they stood. `message` names the
/// message in errors (`message 2`, `messages[1]`).
pub fn from_parts(
    parts: &[Value],
    message: &str,
    files: LocalFiles,
    separator: &str,
) -> Result<(String, Vec<Image>), String> {
    let mut text = String::new();
    let mut images = Vec::new();
    let mut texts = 0;
    for (i, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => match part.get("text") {
                Some(Value::String(t)) => {
                    if texts > 0 {
                        text.push_str(separator);
                    }
                    texts += 1;
                    text.push_str(t);
                }
                _ => {
                    return Err(format!(
                        "part {} of {message} is a text part without a \"text\" string",
                        i + 1
                    ))
                }
            },
            Some("image_url") => {
                let name = format!("image {} of {message}", images.len() + 1);
                // `image_url` is an object with a `url` (OpenAI), or the URL itself (older clients).
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => u.as_str(),
                    Some(obj) => obj.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                let image = read_image(url, &name, files)?;
                images.push(image.placed(text.len()));
            }
            other => {
                return Err(format!(
                    "part {} of {message} is of type {}: gemmactl reads \"text\" and \"image_url\" parts",
                    i + 1,
                    other.map_or("(none)".to_string(), |k| format!("{k:?}"))
                ))
            }
        }
    }
    Ok((text, images))
}

/// One image URL, checked.
fn read_image(url: &str, name: &str, files: LocalFiles) -> Result<Image, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(format!(
            "{name} has no URL: give {{\"image_url\": {{\"url\": \"data:image/png;base64,…\"}}}}"
        ));
    }
    if url.starts_with("data:") {
        return Image::from_base64(url, name).map_err(|e| e.to_string());
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(format!(
            "{name} is a web address, and gemmactl does not fetch images: send the image's bytes as a data URL (data:image/png;base64,…)"
        ));
    }
    let path = match url.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None if url.contains("://") => {
            return Err(format!(
                "{name} has a URL gemmactl cannot read: send the image's bytes as a data URL (data:image/png;base64,…)"
            ))
        }
        None => PathBuf::from(url.strip_prefix("file:").unwrap_or(url)),
    };
    match files {
        LocalFiles::Allowed => Image::from_file(&path).map_err(|e| e.to_string()),
        LocalFiles::Refused { how } => Err(format!(
            "{name} names a local file ({}), which this server does not read for its clients: send the image's bytes as a data URL (data:image/png;base64,…), or {how}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        ::image::RgbImage::from_pixel(2, 2, ::image::Rgb([1, 2, 3]))
            .write_to(&mut out, ::image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn text_and_images_keep_their_order() {
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png())
        );
        let parts = [
            json!({"type": "text", "text": "What is "}),
            json!({"type": "image_url", "image_url": {"url": url}}),
            json!({"type": "text", "text": "?"}),
        ];
        let (text, images) = from_parts(&parts, "message 1", LocalFiles::Allowed, "").unwrap();
        assert_eq!(text, "What is ?");
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].at, "What is ".len());
        assert_eq!(images[0].media_type, "image/png");
    }

    #[test]
    fn local_files_only_where_allowed_and_never_the_web() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.png");
        std::fs::write(&file, png()).unwrap();
        let part = |url: String| [json!({"type": "image_url", "image_url": {"url": url}})];
        let url = format!("file://{}", file.display());
        let (_, images) =
            from_parts(&part(url.clone()), "message 2", LocalFiles::Allowed, "").unwrap();
        assert_eq!(images[0].path.as_deref(), Some(file.as_path()));
        let err = from_parts(
            &part(url),
            "message 2",
            LocalFiles::Refused {
                how: "start the server with --allow-local-images",
            },
            "",
        )
        .unwrap_err();
        assert!(
            err.starts_with("image 1 of message 2 names a local file")
                && err.ends_with("--allow-local-images"),
            "{err}"
        );
        let err = from_parts(
            &part("https://example.com/a.png".into()),
            "message 1",
            LocalFiles::Allowed,
            "",
        )
        .unwrap_err();
        assert!(err.contains("does not fetch images"), "{err}");
        let err = from_parts(
            &part("data:image/png;base64,!!".into()),
            "message 1",
            LocalFiles::Allowed,
            "",
        )
        .unwrap_err();
        assert!(
            err.starts_with("image 1 of message 1 is not valid base64"),
            "{err}"
        );
        let err = from_parts(
            &[json!({"type": "input_audio"})],
            "message 3",
            LocalFiles::Allowed,
            "",
        )
        .unwrap_err();
        assert!(err.contains("\"input_audio\""), "{err}");
    }
}
