//! Placeholder so the crate builds until the gemma.cpp adapter lands (helper overwrites this file).
