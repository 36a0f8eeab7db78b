//! Property tests of the GGUF reader: whatever the bytes, it answers with facts or a sentence,
//! never a panic, and never claims data beyond the end of the file.

use std::path::Path;

use gguf::test_writer::Writer;
use gguf::{GgufError, GgufInfo};
use proptest::prelude::*;

fn parse_bytes(bytes: &[u8]) -> Result<GgufInfo, GgufError> {
    gguf::parse(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        Path::new("p.gguf"),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_bytes(&bytes);
        let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = parse_bytes(&with_magic);
    }

    #[test]
    fn mutated_headers_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        words in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..3),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = Writer::sample().build();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        // Whole little-endian words hit length and count fields, which byte edits rarely do.
        for (at, value) in words {
            let i = at.index(bytes.len() - 8);
            bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        match parse_bytes(&bytes) {
            Ok(info) => prop_assert!(info.data_end <= bytes.len() as u64),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
