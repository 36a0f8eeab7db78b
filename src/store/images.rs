//! Images of stored messages: their rows in `message_images`, and the history's own copies.
//!
//! A copy lives in the `images` folder beside the database, named by the image's SHA-256 (and
//! the extension of its media type), so the same image attached twice is kept once and an
//! export or a replay does not depend on the user's file staying where it was. The database
//! keeps the copy's file name only, so the data folder can be moved as a whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::{fail, MessageId, Result, Store, StoreError};
use crate::domain::Image;

/// The folder of copies, beside the database file.
pub(super) fn images_dir(db: &Path) -> PathBuf {
    db.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("images")
}

/// The file name of an image's copy.
fn copy_name(image: &Image) -> String {
    let ext = match image.media_type.as_str() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/tiff" => "tiff",
        "image/x-portable-anymap" => "pnm",
        _ => "img",
    };
    format!("{}.{ext}", image.sha256)
}

impl Store {
    /// Keeps a copy of `image` in the history's image folder (once per content) and returns
    /// where it is. The bytes are checked against the image's SHA-256 first, so a file changed
    /// since it was attached is not stored under the wrong name.
    pub fn keep_image(&self, image: &Image) -> Result<PathBuf> {
        let dir = images_dir(&self.path);
        let target = dir.join(copy_name(image));
        let copy_failed = |reason: String| StoreError::ImageCopy {
            label: image.label(),
            dir: dir.clone(),
            reason,
        };
        if target.is_file() {
            return Ok(target);
        }
        let bytes = image.bytes().map_err(|e| copy_failed(e.to_string()))?;
        if image_input::sha256_hex(&bytes) != image.sha256 {
            return Err(copy_failed(
                "the file changed after it was attached; attach it again".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| copy_failed(e.to_string()))?;
        // Written whole under a temporary name, then renamed: a crash never leaves a half copy
        // under the final name, and two processes keeping the same image both end well.
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| copy_failed(e.to_string()))?;
        tmp.write_all(&bytes)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| copy_failed(e.to_string()))?;
        tmp.persist(&target)
            .map_err(|e| copy_failed(e.error.to_string()))?;
        Ok(target)
    }

    /// The images of `message`, in order, with their copies' full paths.
    pub(super) fn images_of(&self, message: MessageId) -> Result<Vec<Image>> {
        let dir = images_dir(&self.path);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at, path, copy, media_type, size, sha256, width, height
                 FROM message_images WHERE message_id = ?1 ORDER BY position",
            )
            .map_err(fail(&self.path))?;
        let rows = stmt
            .query_map([message.0], |r| {
                Ok(Image {
                    at: r.get::<_, i64>(0)? as usize,
                    path: r.get::<_, Option<String>>(1)?.map(PathBuf::from),
                    copy: r.get::<_, Option<String>>(2)?.map(|name| dir.join(name)),
                    data: None,
                    media_type: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    sha256: r.get(5)?,
                    width: r.get(6)?,
                    height: r.get(7)?,
                })
            })
            .map_err(fail(&self.path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail(&self.path))
    }
}

/// Stores the rows of `message`'s images (inside the caller's transaction). An image with
/// neither a file nor a copy cannot be found again, so it is refused by the table's CHECK.
pub(super) fn insert_images(
    conn: &Connection,
    message: MessageId,
    images: &[Image],
) -> rusqlite::Result<()> {
    for (position, image) in images.iter().enumerate() {
        let copy = image
            .copy
            .as_ref()
            .and_then(|c| c.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        conn.execute(
            "INSERT INTO message_images
                 (message_id, position, at, path, copy, media_type, size, sha256, width, height)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                message.0,
                position as i64,
                image.at as i64,
                image
                    .path
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                copy,
                image.media_type,
                image.size as i64,
                image.sha256,
                image.width,
                image.height,
            ],
        )?;
    }
    Ok(())
}
