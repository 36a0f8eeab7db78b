//! Writes gemma.cpp BlobStores in the V2 layout its own writer uses (`io/blob_store.cc`): a
//! placeholder header `{magic, 0 blobs, 65536}` padded to 256 bytes, the blobs each padded to 256
//! bytes, zero padding up to a multiple of 64 KiB that leaves room at the very end for the
//! directory (all keys, then all `{offset, size}` pairs) and the real 16-byte header.
//!
//! Blobs are streamed (`begin` / `write` / `end`), so a converter never holds a whole tensor of a
//! large model in memory. Used by gemma-engine's `.sbs` export (which includes this file) and by
//! the test fixtures; no dependencies beyond `std`.

use std::io::{self, Write};

const MAGIC: u32 = 0x0A53_4253;
const BLOB_ALIGN: u64 = 256;
const END_ALIGN: u64 = 64 * 1024;

/// Writes a V2 BlobStore, streaming one blob at a time.
pub struct BlobWriter<W: Write> {
    out: W,
    pos: u64,
    keys: Vec<String>,
    ranges: Vec<(u64, u64)>,
    /// The blob being written: its start.
    open: Option<u64>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl<W: Write> BlobWriter<W> {
    /// Starts a BlobStore on `out` with its 256-byte placeholder header.
    pub fn new(mut out: W) -> io::Result<BlobWriter<W>> {
        let mut head = Vec::with_capacity(BLOB_ALIGN as usize);
        head.extend_from_slice(&MAGIC.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&END_ALIGN.to_le_bytes());
        head.resize(BLOB_ALIGN as usize, 0);
        out.write_all(&head)?;
        Ok(BlobWriter {
            out,
            pos: BLOB_ALIGN,
            keys: Vec::new(),
            ranges: Vec::new(),
            open: None,
        })
    }

    /// Starts blob `key` (1–16 ASCII characters, unique in the file).
    pub fn begin(&mut self, key: &str) -> io::Result<()> {
        if self.open.is_some() {
            return Err(invalid(format!(
                "blob {key} begun before the previous one ended"
            )));
        }
        if key.is_empty() || key.len() > 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "{key:?} cannot be a blob key (1 to 16 ASCII characters)"
            )));
        }
        if self.keys.iter().any(|k| k == key) {
            return Err(invalid(format!("blob {key} written twice")));
        }
        self.keys.push(key.to_string());
        self.open = Some(self.pos);
        Ok(())
    }

    /// Appends `bytes` to the blob begun with [`begin`](Self::begin).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            return Err(invalid("bytes written outside a blob".into()));
        }
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Ends the current blob and pads to the next 256-byte boundary.
    pub fn end(&mut self) -> io::Result<()> {
        let Some(start) = self.open.take() else {
            return Err(invalid("no blob to end".into()));
        };
        let size = self.pos - start;
        if size == 0 {
            return Err(invalid(format!(
                "blob {} is empty",
                self.keys.last().map_or("", |k| k)
            )));
        }
        self.ranges.push((start, size));
        self.pad_to(self.pos.div_ceil(BLOB_ALIGN) * BLOB_ALIGN)
    }

    /// A whole blob at once.
    pub fn add(&mut self, key: &str, data: &[u8]) -> io::Result<()> {
        self.begin(key)?;
        self.write(data)?;
        self.end()
    }

    fn pad_to(&mut self, to: u64) -> io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < to {
            let n = ((to - self.pos) as usize).min(ZEROS.len());
            self.out.write_all(&ZEROS[..n])?;
            self.pos += n as u64;
        }
        Ok(())
    }

    /// Writes the directory and the header; returns the output and the file's size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if self.open.is_some() || self.keys.is_empty() {
            return Err(invalid(
                "a BlobStore needs at least one finished blob".into(),
            ));
        }
        let n = self.keys.len() as u64;
        let dir_bytes = 32 * n;
        // gemma.cpp rounds the header and directory up to 256 bytes when sizing the file.
        let tail = (16 + dir_bytes).div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        let total = (self.pos + tail).div_ceil(END_ALIGN) * END_ALIGN;
        self.pad_to(total - dir_bytes - 16)?;
        let mut end = Vec::with_capacity(dir_bytes as usize + 16);
        for key in &self.keys {
            let mut k = [0u8; 16];
            k[..key.len()].copy_from_slice(key.as_bytes());
            end.extend_from_slice(&k);
        }
        for (offset, size) in &self.ranges {
            end.extend_from_slice(&offset.to_le_bytes());
            end.extend_from_slice(&size.to_le_bytes());
        }
        end.extend_from_slice(&MAGIC.to_le_bytes());
        end.extend_from_slice(&(n as u32).to_le_bytes());
        end.extend_from_slice(&total.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok((self.out, total))
    }
}
