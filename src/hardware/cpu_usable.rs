//! Which SIMD extensions this CPU *and this OS* let a program run, decided by running them.
//!
//! CPUID says what the silicon has; it does not say that the operating system saves the wider
//! registers (XCR0, read with `xgetbv`), nor that Linux lets this process use AMX's tile state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), nor that a hypervisor passes the instructions through.
//! A build of llama.cpp that trusts CPUID alone can die with SIGILL on its first AVX-512 or AMX
//! instruction. So each extension is judged three ways — advertised, enabled by the OS, and
//! actually executed in a forked child that a SIGILL kills instead of us — and only one that
//! passes all three is *usable*.
//!
//! This file has no dependency beyond `std`, so `scripts/setup.sh` compiles it on its own
//! (`rustc --cfg cpu_probe_main`) before the first cargo build, to choose llama.cpp's CMake
//! options; `gemmactl doctor` uses the same code to show built-for against usable.

/// One extension as judged on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(cpu_probe_main), derive(serde::Serialize))]
pub struct Extension {
    /// The name llama.cpp's system info uses (`AVX2`, `AVX512_VNNI`, `AMX_INT8`, …).
    pub name: &'static str,
    /// The ggml CMake options that build for it.
    pub ggml_options: &'static [&'static str],
    /// CPUID says the processor has it.
    pub advertised: bool,
    /// The OS saves and restores the registers it needs (XCR0; for AMX, Linux's permission).
    pub os_enabled: bool,
    /// A sample instruction ran in a child process (`None`: not tried, since it is not
    /// advertised or not enabled).
    pub runs: Option<bool>,
}

impl Extension {
    /// Advertised, enabled and seen to run.
    pub fn usable(&self) -> bool {
        self.advertised && self.os_enabled && self.runs == Some(true)
    }
}

/// The x86 extensions llama.cpp's CPU backend can be built for, each judged on this machine.
/// Empty on other architectures (their builds need no such choice here).
pub fn judge() -> Vec<Extension> {
    imp::judge()
}

/// An engine build's CPU extensions (ggml's names, as the engine's probe reports them) set
/// against this machine's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(not(cpu_probe_main), derive(serde::Serialize))]
pub struct BuildFit {
    /// Built for, but not usable here: the engine dies with SIGILL at its first such instruction.
    pub unusable: Vec<String>,
    /// Usable here, but not built for: speed left on the table.
    pub unused: Vec<String>,
}

/// Compares a build with this machine, over the extensions ggml can report about its own build
/// (it has no report for AMX-BF16, so that one is left out of both lists).
pub fn fit(built_for: &[String], extensions: &[Extension]) -> BuildFit {
    let reportable = |name: &str| name != "AMX_BF16";
    let mut out = BuildFit::default();
    for e in extensions.iter().filter(|e| reportable(e.name)) {
        let built = built_for.iter().any(|b| b == e.name);
        if built && !e.usable() {
            out.unusable.push(e.name.to_string());
        }
        if !built && e.usable() {
            out.unused.push(e.name.to_string());
        }
    }
    out
}

/// The ggml CMake options for a build that runs here: each option `ON` when every extension
/// that needs it is usable, `OFF` otherwise. `portable` gives ggml's own x86-64 default instead
/// (AVX2, FMA, F16C, BMI2; nothing newer), which x86-64 CPUs with AVX2 run (Intel Haswell and AMD
/// Excavator on; not the Pentium, Celeron and Atom parts sold without AVX).
pub fn ggml_options(extensions: &[Extension], portable: bool) -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for e in extensions {
        for option in e.ggml_options {
            let on = if portable {
                PORTABLE.contains(option)
            } else {
                e.usable()
            };
            match out.iter_mut().find(|(o, _)| o == option) {
                Some((_, v)) => *v = *v && on,
                None => out.push((option, on)),
            }
        }
    }
    out
}

/// ggml's x86 default when it is not told to build natively.
const PORTABLE: &[&str] = &[
    "GGML_SSE42",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_BMI2",
    "GGML_FMA",
    "GGML_F16C",
];

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::Extension;
    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;

    // The few C library calls needed, declared here so this file stays free of crates.
    extern "C" {
        fn fork() -> i32;
        fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        fn _exit(code: i32) -> !;
        fn syscall(number: i64, ...) -> i64;
        fn setrlimit(resource: i32, limit: *const [u64; 2]) -> i32;
        fn __errno_location() -> *mut i32;
    }

    const RLIMIT_CORE: i32 = 4;
    const EINTR: i32 = 4;

    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;

    /// XCR0 state components: SSE and AVX (ymm) registers; AVX-512's opmask and zmm registers;
    /// AMX's tile configuration and tile data.
    const XCR0_YMM: u64 = 0b110;
    const XCR0_ZMM: u64 = 0b1110_0000 | XCR0_YMM;
    const XCR0_TILE: u64 = (1 << 17) | (1 << 18);

    struct Cpuid {
        leaf1_ecx: u32,
        leaf7_ebx: u32,
        leaf7_ecx: u32,
        leaf7_edx: u32,
        leaf7_1_eax: u32,
    }

    fn bit(reg: u32, n: u32) -> bool {
        reg & (1 << n) != 0
    }

    pub(super) fn judge() -> Vec<Extension> {
        // CPUID exists on every x86-64 processor; leaf 7 is read only when leaf 0 lists it.
        let (l0, l1, l7, l71) = (
            __cpuid_count(0, 0),
            __cpuid_count(1, 0),
            __cpuid_count(7, 0),
            __cpuid_count(7, 1),
        );
        let has7 = l0.eax >= 7;
        let id = Cpuid {
            leaf1_ecx: l1.ecx,
            leaf7_ebx: if has7 { l7.ebx } else { 0 },
            leaf7_ecx: if has7 { l7.ecx } else { 0 },
            leaf7_edx: if has7 { l7.edx } else { 0 },
            leaf7_1_eax: if has7 { l71.eax } else { 0 },
        };
        // OSXSAVE: the OS has turned on XSAVE, so XCR0 may be read.
        let xcr0 = if bit(id.leaf1_ecx, 27) {
            // SAFETY: OSXSAVE is set, so `xgetbv` is enabled.
            unsafe { xgetbv0() }
        } else {
            0
        };
        let ymm = xcr0 & XCR0_YMM == XCR0_YMM;
        let zmm = xcr0 & XCR0_ZMM == XCR0_ZMM;
        let avx512 = [16, 17, 28, 30, 31].iter().all(|b| bit(id.leaf7_ebx, *b)); // F, DQ, CD, BW, VL: what ggml's AVX512 option needs
        let amx_os = xcr0 & XCR0_TILE == XCR0_TILE;

        let mut out = Vec::new();
        let mut add = |name, opts, advertised, os_enabled, test: unsafe fn()| {
            let runs = (advertised && os_enabled).then(|| runs_in_child(test));
            out.push(Extension {
                name,
                ggml_options: opts,
                advertised,
                os_enabled,
                runs,
            });
        };
        add(
            "AVX",
            &["GGML_AVX", "GGML_SSE42"],
            bit(id.leaf1_ecx, 28),
            ymm,
            test_avx,
        );
        add("AVX2", &["GGML_AVX2"], bit(id.leaf7_ebx, 5), ymm, test_avx2);
        add("FMA", &["GGML_FMA"], bit(id.leaf1_ecx, 12), ymm, test_fma);
        add(
            "F16C",
            &["GGML_F16C"],
            bit(id.leaf1_ecx, 29),
            ymm,
            test_f16c,
        );
        add(
            "BMI2",
            &["GGML_BMI2"],
            bit(id.leaf7_ebx, 8),
            true,
            test_bmi2,
        );
        add(
            "AVX_VNNI",
            &["GGML_AVX_VNNI"],
            bit(id.leaf7_1_eax, 4),
            ymm,
            test_avx_vnni,
        );
        add("AVX512", &["GGML_AVX512"], avx512, zmm, test_avx512);
        add(
            "AVX512_VBMI",
            &["GGML_AVX512_VBMI"],
            avx512 && bit(id.leaf7_ecx, 1),
            zmm,
            test_avx512_vbmi,
        );
        add(
            "AVX512_VNNI",
            &["GGML_AVX512_VNNI"],
            avx512 && bit(id.leaf7_ecx, 11),
            zmm,
            test_avx512_vnni,
        );
        add(
            "AVX512_BF16",
            &["GGML_AVX512_BF16"],
            avx512 && bit(id.leaf7_1_eax, 5),
            zmm,
            test_avx512_bf16,
        );
        // ggml's AMX kernels need AVX-512 VNNI beside the tiles.
        add(
            "AMX_INT8",
            &["GGML_AMX_TILE", "GGML_AMX_INT8"],
            avx512 && bit(id.leaf7_edx, 24) && bit(id.leaf7_edx, 25),
            zmm && amx_os,
            test_amx_int8,
        );
        add(
            "AMX_BF16",
            &["GGML_AMX_TILE", "GGML_AMX_BF16"],
            avx512 && bit(id.leaf7_edx, 24) && bit(id.leaf7_edx, 22),
            zmm && amx_os,
            test_amx_bf16,
        );
        out
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        std::arch::x86_64::_xgetbv(0)
    }

    /// Runs `test` in a forked child: true when it exits normally, false when a signal (SIGILL)
    /// ended it. The child does nothing but the instruction and `_exit`, so forking a
    /// multi-threaded process is safe here.
    fn runs_in_child(test: unsafe fn()) -> bool {
        // SAFETY: fork has no preconditions; the child calls only async-signal-safe code.
        let pid = unsafe { fork() };
        if pid == 0 {
            // SAFETY: in the child; no core file for the SIGILL that may follow (setrlimit is a
            // plain system call), then the test's instruction is the thing being tried, and a
            // SIGILL ends only this child.
            unsafe {
                setrlimit(RLIMIT_CORE, &[0, 0]);
                test();
                _exit(0);
            }
        }
        if pid < 0 {
            return false;
        }
        let mut status = 0i32;
        loop {
            // SAFETY: waits for our own child, with a valid pointer for its status.
            let waited = unsafe { waitpid(pid, &mut status, 0) };
            if waited == pid {
                // Exited normally (WIFEXITED) with code 0.
                return status & 0x7f == 0 && (status >> 8) & 0xff == 0;
            }
            // SAFETY: errno is this thread's, read right after the failed call.
            if waited < 0 && unsafe { *__errno_location() } == EINTR {
                continue;
            }
            // ECHILD and the like: the outcome is unknown, so the extension is not used.
            return false;
        }
    }

    #[target_feature(enable = "avx")]
    unsafe fn test_avx() {
        asm!("vxorps ymm0, ymm0, ymm0", out("ymm0") _);
    }
    #[target_feature(enable = "avx2")]
    unsafe fn test_avx2() {
        asm!("vpaddd ymm0, ymm0, ymm0", out("ymm0") _);
    }
    #[target_feature(enable = "fma")]
    unsafe fn test_fma() {
        asm!("vfmadd231ps ymm0, ymm0, ymm0", out("ymm0") _);
    }
    #[target_feature(enable = "f16c")]
    unsafe fn test_f16c() {
        asm!("vcvtph2ps ymm0, xmm0", out("ymm0") _);
    }
    #[target_feature(enable = "bmi2")]
    unsafe fn test_bmi2() {
        asm!("pdep {0}, {0}, {0}", out(reg) _);
    }
    #[target_feature(enable = "avxvnni")]
    unsafe fn test_avx_vnni() {
        asm!("{{vex}} vpdpbusd ymm0, ymm1, ymm2", out("ymm0") _, out("ymm1") _, out("ymm2") _);
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd")]
    unsafe fn test_avx512() {
        asm!("vpaddb zmm0, zmm0, zmm0", out("zmm0") _);
    }
    #[target_feature(enable = "avx512vbmi")]
    unsafe fn test_avx512_vbmi() {
        asm!("vpermb zmm0, zmm1, zmm2", out("zmm0") _, out("zmm1") _, out("zmm2") _);
    }
    #[target_feature(enable = "avx512vnni")]
    unsafe fn test_avx512_vnni() {
        asm!("vpdpbusd zmm0, zmm1, zmm2", out("zmm0") _, out("zmm1") _, out("zmm2") _);
    }
    #[target_feature(enable = "avx512bf16")]
    unsafe fn test_avx512_bf16() {
        asm!("vdpbf16ps zmm0, zmm1, zmm2", out("zmm0") _, out("zmm1") _, out("zmm2") _);
    }

    /// Asks Linux for AMX's tile data state (as ggml does before its AMX kernels), configures
    /// three 16×64-byte tiles, loads two, and multiplies them with `multiply`.
    unsafe fn amx(multiply: unsafe fn()) {
        if syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0 {
            _exit(1);
        }
        let mut config = [0u8; 64];
        config[0] = 1; // palette 1
        for tile in 0..3 {
            config[16 + 2 * tile] = 64; // bytes per row
            config[48 + tile] = 16; // rows
        }
        let data = [0u8; 1024];
        asm!(
            "ldtilecfg [{config}]",
            "tileloadd tmm1, [{data} + {stride}*1]",
            "tileloadd tmm2, [{data} + {stride}*1]",
            "tilezero tmm0",
            config = in(reg) config.as_ptr(),
            data = in(reg) data.as_ptr(),
            stride = in(reg) 64usize,
            options(nostack),
        );
        multiply();
        asm!("tilerelease", options(nostack));
    }
    unsafe fn test_amx_int8() {
        amx(tdpbusd);
    }
    unsafe fn test_amx_bf16() {
        amx(tdpbf16ps);
    }
    unsafe fn tdpbusd() {
        asm!("tdpbusd tmm0, tmm1, tmm2", options(nostack));
    }
    unsafe fn tdpbf16ps() {
        asm!("tdpbf16ps tmm0, tmm1, tmm2", options(nostack));
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn judge() -> Vec<super::Extension> {
        Vec::new()
    }
}

/// Compiled alone by `scripts/setup.sh`: prints the judgement, or (with `--cargo-env`) the
/// `[env]` table of a cargo configuration that hands ggml's options to llama.cpp's CMake.
#[cfg(cpu_probe_main)]
fn main() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGCHLD: i32 = 17;
    const SIG_DFL: usize = 0;
    // An inherited "ignore SIGCHLD" would have the children reaped before they can be waited
    // for, and every extension judged unusable.
    // SAFETY: sets this program's own disposition for SIGCHLD to the default, before any child.
    unsafe { signal(SIGCHLD, SIG_DFL) };
    let portable = std::env::args().any(|a| a == "--portable");
    let extensions = judge();
    if std::env::args().any(|a| a == "--cargo-env") {
        println!("[env]");
        for (option, on) in ggml_options(&extensions, portable) {
            println!("{option} = \"{}\"", if on { "ON" } else { "OFF" });
        }
        return;
    }
    for e in &extensions {
        println!(
            "{:<12} advertised={} os={} runs={:?} usable={}",
            e.name,
            e.advertised,
            e.os_enabled,
            e.runs,
            e.usable()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &'static str, opts: &'static [&'static str], usable: bool) -> Extension {
        Extension {
            name,
            ggml_options: opts,
            advertised: true,
            os_enabled: usable,
            runs: usable.then_some(true),
        }
    }

    #[test]
    fn an_option_is_on_only_when_every_extension_needing_it_runs() {
        let found = [
            ext("AVX2", &["GGML_AVX2"], true),
            ext("AMX_INT8", &["GGML_AMX_TILE", "GGML_AMX_INT8"], true),
            ext("AMX_BF16", &["GGML_AMX_TILE", "GGML_AMX_BF16"], false),
        ];
        let options = ggml_options(&found, false);
        assert_eq!(
            options,
            vec![
                ("GGML_AVX2", true),
                ("GGML_AMX_TILE", false),
                ("GGML_AMX_INT8", true),
                ("GGML_AMX_BF16", false),
            ]
        );
        // Portable ignores the machine: AVX2 stays on, AMX off.
        let portable = ggml_options(&found, true);
        assert_eq!(portable[0], ("GGML_AVX2", true));
        assert!(portable[1..].iter().all(|(_, on)| !on));
    }

    #[test]
    fn a_build_is_set_against_what_runs_here() {
        let here = [
            ext("AVX2", &["GGML_AVX2"], true),
            ext("AVX512", &["GGML_AVX512"], true),
            ext("AMX_INT8", &["GGML_AMX_TILE", "GGML_AMX_INT8"], false),
            ext("AMX_BF16", &["GGML_AMX_TILE", "GGML_AMX_BF16"], true),
        ];
        let built = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // A portable build: AVX-512 left unused; AMX-BF16 is never reported by ggml, so never
        // listed as unused.
        assert_eq!(
            fit(&built(&["SSE3", "AVX2"]), &here),
            BuildFit {
                unusable: vec![],
                unused: vec!["AVX512".into()]
            }
        );
        // A build for AMX on a machine whose OS does not enable it: the SIGILL case.
        assert_eq!(
            fit(&built(&["AVX2", "AVX512", "AMX_INT8"]), &here),
            BuildFit {
                unusable: vec!["AMX_INT8".into()],
                unused: vec![]
            }
        );
    }

    #[test]
    fn an_extension_that_does_not_run_is_not_usable() {
        let mut e = ext("AVX512", &["GGML_AVX512"], true);
        assert!(e.usable());
        e.runs = Some(false);
        assert!(!e.usable());
        e.runs = None;
        assert!(!e.usable());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn this_machine_runs_what_std_detects() {
        // The standard library also checks CPUID and XCR0; whatever it reports must pass here.
        let judged = judge();
        let usable = |n: &str| judged.iter().any(|e| e.name == n && e.usable());
        assert_eq!(usable("AVX2"), std::arch::is_x86_feature_detected!("avx2"));
        assert_eq!(
            usable("AVX512"),
            std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
        );
    }
}
