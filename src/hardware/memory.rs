//! System memory: what the machine has and what can be had without swapping, from
//! `/proc/meminfo`. The supervisor's own estimate of what a model needs is in
//! `models::memory`; this is only the machine's side.

use serde::Serialize;

/// The machine's memory in bytes, as `/proc/meminfo` says (`None` where it does not).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MemoryInfo {
    /// `MemTotal`: physical memory.
    pub total: Option<u64>,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available: Option<u64>,
    /// `SwapTotal`: swap space.
    pub swap_total: Option<u64>,
}

/// Reads this machine's memory (all `None` where there is no `/proc/meminfo`).
pub fn detect() -> MemoryInfo {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
}

/// Memory the kernel says can be had without swapping (`MemAvailable`), in bytes: what the pool
/// budget and the `.sbs` pre-flight compare a model against.
pub fn available() -> Option<u64> {
    detect().available
}

/// Reads the text of `/proc/meminfo`, whose figures are in KiB, into bytes.
pub fn parse_meminfo(text: &str) -> MemoryInfo {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()?
            .checked_mul(1024)
    };
    MemoryInfo {
        total: kib("MemTotal"),
        available: kib("MemAvailable"),
        swap_total: kib("SwapTotal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_bytes() {
        let m = parse_meminfo("MemTotal:       24683904 kB\nMemFree:        1 kB\nMemAvailable:   23000000 kB\nSwapTotal:             0 kB\n");
        assert_eq!(m.total, Some(24_683_904 * 1024));
        assert_eq!(m.available, Some(23_000_000 * 1024));
        assert_eq!(m.swap_total, Some(0));
        assert_eq!(parse_meminfo("garbage"), MemoryInfo::default());
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        assert!(available().is_some_and(|m| m > 0));
    }
}
