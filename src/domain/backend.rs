//! The compute backends an engine can run a model on.

use serde::{Deserialize, Serialize};

/// A compute backend of gemma-engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The CPU (llama.cpp's CPU backend, or gemma.cpp).
    Cpu,
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// Any GPU with a Vulkan driver.
    Vulkan,
    /// Intel GPUs and NPUs through OpenVINO.
    Openvino,
    /// Another machine's server (a remote engine): where it computes is its own business.
    Remote,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 4] = [
        Backend::Cpu,
        Backend::Cuda,
        Backend::Vulkan,
        Backend::Openvino,
    ];
    /// The GPU backends.
    pub const GPU: [Backend; 3] = [Backend::Cuda, Backend::Vulkan, Backend::Openvino];

    /// The lower-case name used in config, flags and file names.
    pub fn id(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Vulkan => "vulkan",
            Backend::Openvino => "openvino",
            Backend::Remote => "remote",
        }
    }

    /// The name llama.cpp gives the backend (what the engine's `ready` and `--probe` report).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Cpu => "CPU",
            Backend::Cuda => "CUDA",
            Backend::Vulkan => "Vulkan",
            Backend::Openvino => "OpenVINO",
            Backend::Remote => "remote",
        }
    }

    /// The file name of this backend's gemma-engine build.
    pub fn binary_name(self) -> String {
        let stem = match self {
            Backend::Cpu => "gemma-engine".to_string(),
            other => format!("gemma-engine-{}", other.id()),
        };
        format!("{stem}{}", std::env::consts::EXE_SUFFIX)
    }

    /// Whether a backend name reported by llama.cpp (`CUDA`, `Vulkan`, `OPENVINO`, ...) is this one.
    pub fn matches(self, reported: &str) -> bool {
        reported.to_ascii_lowercase().starts_with(self.id())
    }

    /// Reads [`Backend::id`] back, ignoring case. `remote` is not a backend one can ask for, so
    /// it is not read here (see [`Backend::parse_reported`]).
    pub fn parse(text: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| {
            b.id().eq_ignore_ascii_case(text.trim()) || b.label().eq_ignore_ascii_case(text.trim())
        })
    }

    /// Reads a backend as a report wrote it: any of [`Backend::parse`], or `remote`.
    pub fn parse_reported(text: &str) -> Option<Backend> {
        Backend::parse(text).or_else(|| {
            text.trim()
                .eq_ignore_ascii_case(Backend::Remote.id())
                .then_some(Backend::Remote)
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Serializes a backend as llama.cpp names it (`CPU`, `CUDA`), as reports to users and scripts
/// show it; reads the id (`cpu`) as well. For `#[serde(with = "label")]` fields.
pub mod label {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Backend;

    /// Writes [`Backend::label`].
    pub fn serialize<S: Serializer>(b: &Backend, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.label())
    }

    /// Reads a label or an id.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Backend, D::Error> {
        let text = String::deserialize(d)?;
        Backend::parse_reported(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown backend {text:?}")))
    }

    /// The same for an optional backend.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::super::Backend;

        /// Writes the label, or null.
        pub fn serialize<S: Serializer>(b: &Option<Backend>, s: S) -> Result<S::Ok, S::Error> {
            match b {
                Some(b) => s.serialize_str(b.label()),
                None => s.serialize_none(),
            }
        }

        /// Reads a label or an id, or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backend>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => Backend::parse_reported(&text)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown backend {text:?}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_llama_cpp_labels() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.id()), Some(b));
            assert!(b.matches(b.label()), "{b:?}");
        }
        assert!(Backend::Openvino.matches("OPENVINO"));
        assert!(!Backend::Cuda.matches("CPU"));
        assert_eq!(Backend::parse("metal"), None);
    }
}
