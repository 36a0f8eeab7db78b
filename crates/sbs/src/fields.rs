//! gemma.cpp's "fields" serialization, in which a single-file `.sbs` stores its `config` blob (the
//! model configuration) and its `toc` blob (one record per tensor).
//!
//! Everything is a little-endian u32 word. A structure is its payload length in words, then its
//! fields in a fixed order; booleans and enums are one word; a float is its bit pattern; a string
//! is its length in words (at most 64) and then its ASCII bytes zero-padded to whole words; a
//! vector is its element count (at most 65536) and then the elements. A reader that meets a
//! structure shorter than it expects leaves the missing fields at their defaults (old data, new
//! code), and one that meets a longer one counts the extra words (new data, old code).
//!
//! [`Fields`] reads or writes one structure through the same `visit` function, so a record's field
//! order is written down once (in `config.rs` and `toc.rs`) for both directions. Like gemma.cpp's
//! reader it refuses what gemma.cpp refuses — a bool other than 0/1, an out-of-range enum, a
//! non-finite float, an over-long or non-ASCII string, a length running past the data — and the
//! first such fault is kept, with the path of the field it was found in, so a damaged blob is
//! reported as `layer_configs[9].qkv_dim`, not as "invalid".
//!
//! This file has no dependencies beyond `std`: gemma-engine includes it too (it writes `.sbs`
//! files for `models import`).

use std::fmt;

/// gemma.cpp's limit on a string's length, in words.
pub const MAX_STRING_WORDS: u32 = 64;
/// gemma.cpp's limit on a vector's element count.
pub const MAX_VECTOR_LEN: u32 = 64 * 1024;

/// The first field a reader could not accept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `layer_configs[9].qkv_dim`.
    pub field: String,
    /// What is wrong with it, as a clause (e.g. `is 2, not a boolean (0 or 1)`).
    pub problem: String,
}

impl fmt::Display for FieldError {
    /// `field layer_configs[9].qkv_dim is ...`, or just the problem for a whole record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "field {} {}", self.field, self.problem)
        }
    }
}

/// What a read of one structure found besides its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadSummary {
    /// Word index just after the fields that were read (not counting extra words).
    pub end: usize,
    /// Fields the data did not have (left at their defaults).
    pub missing: u32,
    /// Words the data had beyond the fields this code knows.
    pub extra: u32,
}

enum Mode<'a> {
    Read {
        words: &'a [u32],
        pos: usize,
        /// Where each open structure ends.
        ends: Vec<usize>,
        missing: u32,
        extra: u32,
    },
    Write {
        words: Vec<u32>,
    },
}

/// One pass over a structure's fields, reading or writing.
pub struct Fields<'a> {
    mode: Mode<'a>,
    /// Names of the open structures and the current field, for error paths.
    path: Vec<String>,
    error: Option<FieldError>,
}

impl<'a> Fields<'a> {
    /// A reader of the structure that starts at `words[pos]`.
    pub fn reader(words: &'a [u32], pos: usize) -> Fields<'a> {
        Fields {
            mode: Mode::Read {
                words,
                pos,
                ends: vec![words.len()],
                missing: 0,
                extra: 0,
            },
            path: Vec::new(),
            error: None,
        }
    }

    /// A writer, which appends each visited field's words.
    pub fn writer() -> Fields<'static> {
        Fields {
            mode: Mode::Write { words: Vec::new() },
            path: Vec::new(),
            error: None,
        }
    }

    /// Whether this pass reads rather than writes (a reader sizes vectors from the data).
    pub fn is_reading(&self) -> bool {
        matches!(self.mode, Mode::Read { .. })
    }

    /// The outcome of a read: where it ended, or the first field it could not accept.
    pub fn finish_read(self) -> Result<ReadSummary, FieldError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.mode {
            Mode::Read {
                pos,
                missing,
                extra,
                ..
            } => Ok(ReadSummary {
                end: pos,
                missing,
                extra,
            }),
            Mode::Write { .. } => Ok(ReadSummary::default()),
        }
    }

    /// The written words, or the first field that could not be written (an invalid string).
    pub fn finish_write(self) -> Result<Vec<u32>, FieldError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.mode {
            Mode::Write { words } => Ok(words),
            Mode::Read { .. } => Ok(Vec::new()),
        }
    }

    fn fail(&mut self, name: &str, problem: String) {
        if self.error.is_none() {
            let field = self
                .path
                .iter()
                .map(String::as_str)
                .chain([name])
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(".");
            self.error = Some(FieldError { field, problem });
        }
    }

    /// Whether a reader must leave this field alone: after a fault, or past the end of the
    /// structure's data (a missing field, counted).
    fn skip(&mut self) -> bool {
        if self.error.is_some() {
            return true;
        }
        match &mut self.mode {
            Mode::Read {
                pos, ends, missing, ..
            } => {
                if *pos >= *ends.last().unwrap_or(&0) {
                    *missing += 1;
                    true
                } else {
                    false
                }
            }
            Mode::Write { .. } => false,
        }
    }

    /// Reads or writes one raw word; callers have checked `skip`.
    fn word(&mut self, value: &mut u32) {
        match &mut self.mode {
            Mode::Read { words, pos, .. } => {
                *value = words[*pos];
                *pos += 1;
            }
            Mode::Write { words } => words.push(*value),
        }
    }

    /// A u32 field: one word.
    pub fn u32(&mut self, _name: &str, value: &mut u32) {
        if !self.skip() {
            self.word(value);
        }
    }

    /// An i32 field: one word, its two's-complement bits.
    pub fn i32(&mut self, name: &str, value: &mut i32) {
        let mut w = *value as u32;
        self.u32(name, &mut w);
        *value = w as i32;
    }

    /// An f32 field: one word, its bit pattern; a reader refuses NaN and infinities.
    pub fn f32(&mut self, name: &str, value: &mut f32) {
        if self.skip() {
            return;
        }
        let mut w = value.to_bits();
        self.word(&mut w);
        let v = f32::from_bits(w);
        if !v.is_finite() {
            self.fail(name, format!("is not a finite number (bits {w:#010x})"));
            return;
        }
        *value = v;
    }

    /// A bool field: one word; a reader refuses values other than 0 and 1.
    pub fn bool(&mut self, name: &str, value: &mut bool) {
        if self.skip() {
            return;
        }
        let mut w = u32::from(*value);
        self.word(&mut w);
        if w > 1 {
            self.fail(name, format!("is {w}, not a boolean (0 or 1)"));
            return;
        }
        *value = w == 1;
    }

    /// An enum stored as u32; `valid` says which values gemma.cpp accepts.
    pub fn enumeration(&mut self, name: &str, value: &mut u32, valid: fn(u32) -> bool) {
        if self.skip() {
            return;
        }
        let mut w = *value;
        self.word(&mut w);
        if !valid(w) {
            self.fail(name, format!("is {w}, which is not one of its values"));
            return;
        }
        *value = w;
    }

    /// A string: its length in words, then its ASCII bytes zero-padded to whole words.
    pub fn string(&mut self, name: &str, value: &mut String) {
        if self.skip() {
            return;
        }
        if self.is_reading() {
            let mut n = 0u32;
            self.word(&mut n);
            if n > MAX_STRING_WORDS {
                self.fail(
                    name,
                    format!("claims {n} words of text, more than gemma.cpp's limit of {MAX_STRING_WORDS}"),
                );
                return;
            }
            let Mode::Read { pos, ends, .. } = &self.mode else {
                return;
            };
            if *pos + n as usize > *ends.last().unwrap_or(&0) {
                self.fail(
                    name,
                    format!("claims {n} words of text, running past its record"),
                );
                return;
            }
            let mut bytes = Vec::with_capacity(n as usize * 4);
            for i in 0..n {
                let mut w = 0u32;
                self.word(&mut w);
                if w == 0 || w & 0x8080_8080 != 0 {
                    self.fail(
                        name,
                        format!("has a word that is not ASCII text ({w:#010x} at word {i} of {n})"),
                    );
                    return;
                }
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            // Every byte is ASCII, checked above.
            *value = bytes.iter().map(|b| *b as char).collect();
        } else {
            let bytes = value.as_bytes();
            let n = bytes.len().div_ceil(4) as u32;
            if n > MAX_STRING_WORDS || !bytes.iter().all(|b| b.is_ascii() && *b != 0) {
                self.fail(
                    name,
                    format!("{value:?} cannot be stored (at most 256 ASCII characters)"),
                );
                return;
            }
            let mut n = n;
            self.word(&mut n);
            for chunk in bytes.chunks(4) {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                let mut w = u32::from_le_bytes(w);
                self.word(&mut w);
            }
        }
    }

    /// A nested structure: its length word, then whatever `body` visits.
    pub fn nested(&mut self, name: &str, body: impl FnOnce(&mut Fields<'a>)) {
        if let Mode::Write { words } = &mut self.mode {
            let at = words.len();
            words.push(0);
            self.path.push(name.to_string());
            body(self);
            self.path.pop();
            if let Mode::Write { words } = &mut self.mode {
                words[at] = (words.len() - at - 1) as u32;
            }
            return;
        }
        if self.skip() {
            return;
        }
        let mut n = 0u32;
        self.word(&mut n);
        let Mode::Read {
            words, pos, ends, ..
        } = &mut self.mode
        else {
            return;
        };
        // Like gemma.cpp, bounded by the whole span rather than the enclosing record.
        if *pos + n as usize > words.len() {
            let (at, len) = (*pos, words.len());
            self.fail(
                name,
                format!(
                    "claims {n} words but only {} follow",
                    len.saturating_sub(at)
                ),
            );
            return;
        }
        ends.push(*pos + n as usize);
        self.path.push(name.to_string());
        body(self);
        self.path.pop();
        if let Mode::Read {
            pos, ends, extra, ..
        } = &mut self.mode
        {
            let end = ends.pop().unwrap_or(*pos);
            *extra += end.saturating_sub(*pos) as u32;
        }
    }

    /// A vector's element count. Returns the count to visit (the stored one when reading, the
    /// given one when writing), or `None` when the vector is to be left alone.
    pub fn count(&mut self, name: &str, len: usize) -> Option<usize> {
        if self.skip() {
            return None;
        }
        let mut n = len as u32;
        self.word(&mut n);
        if n > MAX_VECTOR_LEN {
            self.fail(
                name,
                format!("claims {n} elements, more than gemma.cpp's limit of {MAX_VECTOR_LEN}"),
            );
            return None;
        }
        Some(n as usize)
    }

    /// A vector of u32.
    pub fn u32_vec(&mut self, name: &str, values: &mut Vec<u32>) {
        let Some(n) = self.count(name, values.len()) else {
            return;
        };
        if self.is_reading() {
            values.resize(n, 0);
        }
        for (i, v) in values.iter_mut().enumerate() {
            self.u32(&format!("{name}[{i}]"), v);
        }
    }

    /// A vector of strings.
    pub fn string_vec(&mut self, name: &str, values: &mut Vec<String>) {
        let Some(n) = self.count(name, values.len()) else {
            return;
        };
        if self.is_reading() {
            values.resize(n, String::new());
        }
        for (i, v) in values.iter_mut().enumerate() {
            self.string(&format!("{name}[{i}]"), v);
        }
    }
}

/// Little-endian bytes to words; `None` when the length is not a whole number of words.
pub fn words(bytes: &[u8]) -> Option<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    )
}

/// Words to little-endian bytes (the inverse of [`words`]).
pub fn bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Clone)]
    struct Inner {
        a: u32,
        flag: bool,
    }

    #[derive(Debug, Default, PartialEq, Clone)]
    struct Outer {
        name: String,
        kind: u32,
        scale: f32,
        inner: Inner,
        list: Vec<u32>,
    }

    fn visit(o: &mut Outer, f: &mut Fields) {
        f.nested("outer", |f| {
            f.string("name", &mut o.name);
            f.enumeration("kind", &mut o.kind, |k| k < 3);
            f.f32("scale", &mut o.scale);
            f.nested("inner", |f| {
                f.u32("a", &mut o.inner.a);
                f.bool("flag", &mut o.inner.flag);
            });
            f.u32_vec("list", &mut o.list);
        });
    }

    fn sample() -> Outer {
        Outer {
            name: "Gemma3_270M".into(),
            kind: 2,
            scale: 1.5,
            inner: Inner { a: 7, flag: true },
            list: vec![512, 32768],
        }
    }

    fn write(o: &Outer) -> Vec<u32> {
        let mut o = o.clone();
        let mut f = Fields::writer();
        visit(&mut o, &mut f);
        f.finish_write().unwrap()
    }

    fn read(words: &[u32]) -> Result<(Outer, ReadSummary), FieldError> {
        let mut o = Outer::default();
        let mut f = Fields::reader(words, 0);
        visit(&mut o, &mut f);
        f.finish_read().map(|s| (o, s))
    }

    #[test]
    fn round_trips_with_gemma_cpp_layout() {
        let w = write(&sample());
        // size, "Gemma3_270M" (3 words), kind, scale, inner (size + 2), list (count + 2).
        assert_eq!(w[0] as usize, w.len() - 1);
        assert_eq!(w[1], 3);
        assert_eq!(&bytes(&w[2..5]), b"Gemma3_270M\0");
        assert_eq!(w[6], 1.5f32.to_bits());
        assert_eq!(&w[7..10], &[2, 7, 1]);
        assert_eq!(&w[10..], &[2, 512, 32768]);
        let (o, s) = read(&w).unwrap();
        assert_eq!(o, sample());
        assert_eq!(
            s,
            ReadSummary {
                end: w.len(),
                missing: 0,
                extra: 0
            }
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let good = write(&sample());
        let bad = |at: usize, value: u32| {
            let mut w = good.clone();
            w[at] = value;
            read(&w).unwrap_err().to_string()
        };
        assert_eq!(
            bad(9, 2),
            "field outer.inner.flag is 2, not a boolean (0 or 1)"
        );
        assert_eq!(
            bad(5, 9),
            "field outer.kind is 9, which is not one of its values"
        );
        assert!(bad(6, f32::NAN.to_bits()).starts_with("field outer.scale is not a finite number"));
        assert!(bad(2, 0x8041_4141).starts_with("field outer.name has a word that is not ASCII"));
        assert!(bad(1, 65).contains("more than gemma.cpp's limit of 64"));
        assert!(bad(0, 1000).starts_with("field outer claims 1000 words but only"));
        assert!(bad(10, 70_000).starts_with("field outer.list claims 70000 elements"));
    }

    #[test]
    fn short_and_long_records_are_old_and_new_data() {
        let good = write(&sample());
        // Cut the list off: its count and elements are missing, not invalid.
        let mut short = good[..10].to_vec();
        short[0] = 9;
        let (o, s) = read(&short).unwrap();
        assert_eq!(o.list, Vec::<u32>::new());
        assert_eq!(s.missing, 1);
        // Two unknown words appended to the outer record.
        let mut long = good.clone();
        long.extend([5, 6]);
        long[0] += 2;
        let (_, s) = read(&long).unwrap();
        assert_eq!((s.extra, s.end), (2, good.len()));
    }
}
