//! The `toc` blob of a single-file `.sbs`: one record per tensor (gemma.cpp's serialized `MatPtr`,
//! `util/mat.h`), back to back in the fields format of `fields.rs`.
//!
//! A record is a name (the tensor's blob key), a type, the bytes per element, the number of
//! elements stored, rows, columns, a scale applied when multiplying, and the row stride. gemma.cpp
//! recomputes the element size and count from the type and shape, so they are checked here
//! against both; the blob's size must be their product.
//!
//! No dependencies beyond `std` and the sibling modules: gemma-engine includes it too.

use crate::config::{TYPE_BITS, TYPE_I8, TYPE_NAMES, TYPE_NUQ};
use crate::fields::{self, FieldError, Fields};

/// One tensor's record in the `toc` blob (gemma.cpp's serialized `MatPtr`).
#[derive(Debug, Clone, PartialEq)]
pub struct TocEntry {
    /// The tensor's name, which is also its blob key.
    pub name: String,
    /// Element `Type`, an index into [`TYPE_NAMES`].
    pub ty: u32,
    /// Bytes per stored element ([`element_bytes`] of the type).
    pub element_bytes: u32,
    /// Elements stored ([`num_elements`] for `rows` × `cols` values).
    pub num_elements: u32,
    /// Number of rows.
    pub rows: u32,
    /// Number of columns.
    pub cols: u32,
    /// Scale applied when multiplying (1 for f32 and bf16).
    pub scale: f32,
    /// Elements from the start of one row to the next (`cols` when packed).
    pub stride: u32,
}

impl TocEntry {
    /// A packed tensor of `rows` × `cols` elements of type `ty`, as gemma.cpp writes one.
    pub fn packed(name: &str, ty: u32, rows: u32, cols: u32) -> TocEntry {
        TocEntry {
            name: name.to_string(),
            ty,
            element_bytes: element_bytes(ty),
            num_elements: num_elements(ty, rows as u64 * cols as u64) as u32,
            rows,
            cols,
            scale: 1.0,
            stride: cols,
        }
    }

    /// Reads or writes the record's fields in gemma.cpp's order.
    pub fn visit(&mut self, f: &mut Fields) {
        f.nested("", |f| {
            f.string("name", &mut self.name);
            f.enumeration("type", &mut self.ty, |t| (t as usize) < TYPE_NAMES.len());
            f.u32("element_bytes", &mut self.element_bytes);
            f.u32("num_elements", &mut self.num_elements);
            f.u32("rows", &mut self.rows);
            f.u32("cols", &mut self.cols);
            f.f32("scale", &mut self.scale);
            f.u32("stride", &mut self.stride);
        });
    }

    /// The blob size gemma.cpp expects for this tensor (from its type and shape).
    pub fn expected_bytes(&self) -> u64 {
        num_elements(self.ty, self.rows as u64 * self.cols as u64) * element_bytes(self.ty) as u64
    }
}

/// Bytes per stored element of a type (gemma.cpp rounds 4-bit NUQ up to one byte).
pub fn element_bytes(ty: u32) -> u32 {
    TYPE_BITS.get(ty as usize).map_or(0, |b| b.div_ceil(8))
}

/// Elements stored for `n` values: NUQ and I8 streams carry per-group tables too.
pub fn num_elements(ty: u32, n: u64) -> u64 {
    match ty {
        // 16 cluster centres per group of 256, then two 4-bit indices per byte.
        TYPE_NUQ => 16 * n.div_ceil(256) + n.div_ceil(2),
        // A bf16 scale and zero point per group of 128, then one byte per value.
        TYPE_I8 => 4 * n.div_ceil(128) + n,
        _ => n,
    }
}

/// One record that could not be read: its position and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocError {
    /// Index of the record (0-based) and its name when that much was readable.
    pub index: usize,
    /// The record's name, when that much was readable.
    pub name: Option<String>,
    /// The field that could not be read; `None` when the record is cut short or the blob is not
    /// whole 4-byte words.
    pub error: Option<FieldError>,
}

impl std::fmt::Display for TocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let which = match &self.name {
            Some(n) if !n.is_empty() => format!("record {} ({n})", self.index),
            _ => format!("record {}", self.index),
        };
        match &self.error {
            Some(e) if e.field.is_empty() => write!(f, "{which} {}", e.problem),
            Some(e) => write!(f, "{which}: {e}"),
            None => write!(
                f,
                "{which} is cut short or does not end on a whole 4-byte field"
            ),
        }
    }
}

/// Decodes every record of a `toc` blob.
pub fn read(bytes: &[u8]) -> Result<Vec<TocEntry>, TocError> {
    let Some(words) = fields::words(bytes) else {
        return Err(TocError {
            index: 0,
            name: None,
            error: None,
        });
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < words.len() {
        let mut entry = TocEntry {
            name: String::new(),
            ty: 0,
            element_bytes: 0,
            num_elements: 0,
            rows: 0,
            cols: 0,
            scale: 1.0,
            stride: 0,
        };
        let mut f = Fields::reader(&words, pos);
        entry.visit(&mut f);
        match f.finish_read() {
            Ok(s) => {
                // Like gemma.cpp, skip words a newer writer added to each record.
                let next = s.end + s.extra as usize;
                if next <= pos || next > words.len() {
                    return Err(TocError {
                        index: out.len(),
                        name: Some(entry.name),
                        error: None,
                    });
                }
                pos = next;
                out.push(entry);
            }
            Err(e) => {
                return Err(TocError {
                    index: out.len(),
                    name: (!entry.name.is_empty()).then_some(entry.name),
                    error: Some(e),
                })
            }
        }
    }
    Ok(out)
}

/// Encodes records as a `toc` blob.
pub fn to_bytes(entries: &[TocEntry]) -> Result<Vec<u8>, FieldError> {
    let mut f = Fields::writer();
    for e in entries {
        e.clone().visit(&mut f);
    }
    f.finish_write().map(|w| fields::bytes(&w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TYPE_BF16, TYPE_F32};

    #[test]
    fn records_round_trip_in_order() {
        let entries = vec![
            TocEntry::packed("c_embedding", TYPE_BF16, 262144, 640),
            TocEntry::packed("c_final_norm", TYPE_F32, 1, 640),
        ];
        let bytes = to_bytes(&entries).unwrap();
        // Per record: size, name (len + words), then 7 words.
        assert_eq!(bytes.len(), 4 * ((1 + 1 + 3 + 7) + (1 + 1 + 3 + 7)));
        assert_eq!(read(&bytes).unwrap(), entries);
        assert_eq!(entries[0].expected_bytes(), 262144 * 640 * 2);
        assert_eq!(num_elements(TYPE_NUQ, 512), 32 + 256);
    }

    #[test]
    fn a_damaged_record_is_named() {
        let entries = vec![
            TocEntry::packed("qkv1_w_0", TYPE_BF16, 1024, 640),
            TocEntry::packed("qkv2_w_0", TYPE_BF16, 512, 640),
        ];
        let mut words = fields::words(&to_bytes(&entries).unwrap()).unwrap();
        // The first record is 11 words (size, name length, 2 name words, 7 fields); the second
        // record's type follows its size, name length and 2 name words.
        words[11 + 4] = 99;
        let err = read(&fields::bytes(&words)).unwrap_err().to_string();
        assert_eq!(
            err,
            "record 1 (qkv2_w_0): field type is 99, which is not one of its values"
        );
    }
}
