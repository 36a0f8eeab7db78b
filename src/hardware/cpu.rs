//! The CPU: model name, cores, and the SIMD extensions that decide llama.cpp's CPU speed.
//!
//! Read from `/proc/cpuinfo` on Linux (the kernel's view, including what a hypervisor hides), with
//! the standard library's feature detection as the fallback elsewhere. Only the extensions that
//! matter for inference are listed: AVX2/FMA/F16C and AVX-512 (with VNNI/BF16) on x86, NEON/SVE/
//! dot-product on Arm.

use serde::Serialize;

/// What `doctor` and the backend choice know about the CPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuInfo {
    /// The model name (`model name` in `/proc/cpuinfo`).
    pub model: String,
    /// The architecture gemmactl was built for (`x86_64`, `aarch64`, …).
    pub arch: &'static str,
    /// Threads the OS lets this process use.
    pub logical_cores: usize,
    /// Distinct physical cores, where `/proc/cpuinfo` says.
    pub physical_cores: Option<usize>,
    /// SIMD extensions that matter for inference, in a fixed order.
    pub simd: Vec<String>,
}

/// Extensions reported, as (name shown, `/proc/cpuinfo` flag).
const X86_FLAGS: &[(&str, &str)] = &[
    ("SSE4.2", "sse4_2"),
    ("AVX", "avx"),
    ("AVX2", "avx2"),
    ("FMA", "fma"),
    ("F16C", "f16c"),
    ("AVX-VNNI", "avx_vnni"),
    ("AVX-512F", "avx512f"),
    ("AVX-512BW", "avx512bw"),
    ("AVX-512VNNI", "avx512_vnni"),
    ("AVX-512BF16", "avx512_bf16"),
    ("AMX", "amx_tile"),
];
const ARM_FLAGS: &[(&str, &str)] = &[
    ("NEON", "asimd"),
    ("DOTPROD", "asimddp"),
    ("I8MM", "i8mm"),
    ("SVE", "sve"),
    ("SVE2", "sve2"),
];

/// Cores this process may use (a CPU quota or `taskset` counts), if the OS says.
pub fn usable_cores() -> Option<usize> {
    std::thread::available_parallelism().ok().map(|n| n.get())
}

/// Reads this machine's CPU: `/proc/cpuinfo` where there is one, the standard library otherwise.
pub fn detect() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut info = parse_cpuinfo(&text, std::env::consts::ARCH);
    info.logical_cores = usable_cores().unwrap_or(info.logical_cores.max(1));
    if info.simd.is_empty() {
        info.simd = detected_by_std();
    }
    info
}

/// The facts in a `/proc/cpuinfo` text (pure, so it is tested with other machines' files).
pub fn parse_cpuinfo(text: &str, arch: &'static str) -> CpuInfo {
    let field = |line: &str| {
        line.split_once(':')
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
    };
    let mut model = None;
    let mut flags: Vec<String> = Vec::new();
    let mut processors = 0;
    let mut cores = std::collections::BTreeSet::new();
    let mut physical_id = String::new();
    for (key, value) in text.lines().filter_map(field) {
        match key.as_str() {
            "processor" => processors += 1,
            "model name" | "Hardware" | "cpu model" if model.is_none() => model = Some(value),
            "physical id" => physical_id = value,
            "core id" => {
                cores.insert((physical_id.clone(), value));
            }
            "flags" | "Features" if flags.is_empty() => {
                flags = value.split_whitespace().map(str::to_string).collect()
            }
            _ => {}
        }
    }
    let table = if arch == "aarch64" || arch == "arm" {
        ARM_FLAGS
    } else {
        X86_FLAGS
    };
    let mut simd: Vec<String> = table
        .iter()
        .filter(|(_, flag)| flags.iter().any(|f| f == flag))
        .map(|(name, _)| name.to_string())
        .collect();
    // NEON is part of the 64-bit Arm baseline, whatever the kernel lists.
    if arch == "aarch64" && !simd.iter().any(|s| s == "NEON") {
        simd.insert(0, "NEON".into());
    }
    CpuInfo {
        model: model.unwrap_or_else(|| "unknown CPU".into()),
        arch,
        logical_cores: processors,
        physical_cores: (!cores.is_empty()).then_some(cores.len()),
        simd,
    }
}

/// Where there is no `/proc/cpuinfo`: what the standard library can detect.
#[allow(unused_mut)]
fn detected_by_std() -> Vec<String> {
    let mut found = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            found.push("AVX".to_string());
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            found.push("AVX2".to_string());
        }
        if std::arch::is_x86_feature_detected!("fma") {
            found.push("FMA".to_string());
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            found.push("AVX-512F".to_string());
        }
    }
    #[cfg(target_arch = "aarch64")]
    found.push("NEON".to_string());
    found
}

impl CpuInfo {
    /// Whether the SIMD extension shown as `name` (e.g. `AVX2`) is present.
    pub fn has(&self, name: &str) -> bool {
        self.simd.iter().any(|s| s == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XEON: &str = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu sse4_2 avx f16c avx2 fma avx512f avx512bw avx512_vnni\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\nphysical id\t: 0\ncore id\t\t: 1\nflags\t\t: fpu sse4_2 avx f16c avx2 fma avx512f avx512bw avx512_vnni\n";
    const GRAVITON: &str = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes asimddp sve\nCPU implementer\t: 0x41\n";

    #[test]
    fn x86_flags_become_simd_names() {
        let cpu = parse_cpuinfo(XEON, "x86_64");
        assert_eq!(cpu.model, "Intel(R) Xeon(R) Processor");
        assert_eq!(cpu.logical_cores, 2);
        assert_eq!(cpu.physical_cores, Some(2));
        assert!(cpu.has("AVX2") && cpu.has("AVX-512F") && cpu.has("AVX-512VNNI"));
        assert!(!cpu.has("AMX") && !cpu.has("NEON"));
    }

    #[test]
    fn arm_features_become_simd_names() {
        let cpu = parse_cpuinfo(GRAVITON, "aarch64");
        assert_eq!(cpu.simd, vec!["NEON", "DOTPROD", "SVE"]);
        assert_eq!(cpu.model, "unknown CPU");
    }

    #[test]
    fn this_machine_has_a_cpu() {
        let cpu = detect();
        assert!(cpu.logical_cores >= 1);
        assert!(!cpu.model.is_empty());
    }
}
