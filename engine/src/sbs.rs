//! gemma.cpp's `.sbs` format: the same files gemmactl reads it with (`src/models/sbs/`), so the
//! config, the table of tensors and the BlobStore layout have one definition for the reader and
//! for `--export-sbs`, the writer.

#[path = "../../src/models/sbs/config.rs"]
pub mod config;
#[path = "../../src/models/sbs/fields.rs"]
pub mod fields;
#[path = "../../src/models/sbs/tensors.rs"]
pub mod tensors;
#[path = "../../src/models/sbs/toc.rs"]
pub mod toc;
#[path = "../../src/models/sbs/writer.rs"]
pub mod writer;
