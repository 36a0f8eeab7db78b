//! gemma.cpp's single-file weights format (`.sbs`), as far as gemmactl needs it: the serialized
//! `ModelConfig` ([`config`], read and written with gemma.cpp's fields visitor, [`fields`]), the
//! table of tensors ([`toc`]) and the tensors a Gemma 3 model must have ([`tensors`]), and the
//! BlobStore writer ([`writer`]). gemmactl reads files with it (`models add/show/check`);
//! gemma-engine writes them (`--export-sbs`, behind `models import`). One definition for both
//! sides, so the reader and the writer cannot disagree. Each module names the gemma.cpp source
//! (commit 3ed403e) its rules come from.

pub mod config;
pub mod fields;
pub mod tensors;
pub mod toc;
pub mod writer;
