//! `scripts/lib/prereqs.sh`, the checks `scripts/setup.sh` makes before building, run by bash:
//! against prepared directory trees for what it looks for on disk, and against small stand-ins
//! on PATH for what this machine cannot have (an old CMake, a broken compiler, a Python without
//! pip). Each false positive that let a fresh machine through stays caught here.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/prereqs.sh")
}

/// What a bash command printed and whether it succeeded.
struct Ran {
    ok: bool,
    stdout: String,
}

/// Runs `script` with the library sourced, `$1`… = `args`. The environment is cleared of what
/// would let this machine's own libclang or Python answer for a prepared tree; `env` adds to it,
/// and `stubs` (a folder of stand-in programs) goes first on PATH.
fn bash(script: &str, args: &[&str], env: &[(&str, &str)], stubs: Option<&Path>) -> Ran {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(". '{}'; {script}", library().display()))
        .arg("bash")
        .args(args)
        .env_remove("LIBCLANG_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBRARY_PATH")
        .env_remove("GEMMACTL_PYTHON")
        .env_remove("CC")
        .env_remove("CXX")
        .env("LLVM_CONFIG_PATH", "/nonexistent/llvm-config")
        .env("PREREQ_MULTIARCH", "x86_64-linux-gnu");
    if let Some(dir) = stubs {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run bash");
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// A directory tree standing for a machine's root.
struct Tree(TempDir);

impl Tree {
    fn new() -> Tree {
        Tree(tempfile::tempdir().expect("temp dir"))
    }

    fn root(&self) -> &str {
        self.0.path().to_str().unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A file that starts like a 64-bit (class 2) or 32-bit (class 1) ELF shared library.
    fn elf(&self, rel: &str, class: u8) -> PathBuf {
        let mut bytes = vec![0x7f, b'E', b'L', b'F', class, 1, 1];
        bytes.resize(64, 0);
        self.write(rel, &bytes)
    }

    fn link(&self, rel: &str, target: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// A stand-in program `name` (a shell script) in `bin/`.
    fn stub(&self, name: &str, body: &str) -> PathBuf {
        let path = self.write(
            &format!("bin/{name}"),
            format!("#!/bin/sh\n{body}\n").as_bytes(),
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.path("bin")
    }
}

fn find_libclang(tree: &Tree, env: &[(&str, &str)]) -> Option<String> {
    let ran = bash("prereq_find_libclang \"$1\"", &[tree.root()], env, None);
    ran.ok.then(|| ran.stdout.trim().to_string())
}

/// The lines `prereq_check_<check>` prints for `tree` whose package column is `package`. The
/// check gets the tree's root, or for `cargo` the tree's Cargo.toml.
fn check_lines(
    check: &str,
    tree: &Tree,
    package: &str,
    env: &[(&str, &str)],
    stubs: Option<&Path>,
) -> Vec<String> {
    let toml = tree.path("Cargo.toml");
    let arg = if check == "cargo" {
        toml.to_str().unwrap()
    } else {
        tree.root()
    };
    let ran = bash(&format!("prereq_check_{check} \"$1\""), &[arg], env, stubs);
    assert!(ran.ok, "prereq_check_{check} failed: {}", ran.stdout);
    ran.stdout
        .lines()
        .filter(|l| l.split('\t').next() == Some(package))
        .map(str::to_string)
        .collect()
}

#[test]
fn mesas_libclang_cpp_alone_is_not_libclang() {
    // What a fresh Debian 12 with Mesa has: the C++ interface library, and no libclang.
    let tree = Tree::new();
    tree.elf("usr/lib/llvm-14/lib/libclang-cpp.so.14", 2);
    tree.elf("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", 2);
    tree.link(
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so",
        "libclang-cpp.so.14",
    );
    assert_eq!(find_libclang(&tree, &[]), None);
    let lines = check_lines("libclang", &tree, "libclang-dev", &[], None);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("no libclang that bindgen can load")
            && lines[0].contains("sudo apt-get install libclang-dev"),
        "{lines:?}"
    );
}

#[test]
fn libclang_so_1_in_the_llvm_folder_is_found() {
    // What Debian's libclang1-14 installs.
    let tree = Tree::new();
    tree.elf("usr/lib/llvm-14/lib/libclang-cpp.so.14", 2);
    let lib = tree.elf("usr/lib/llvm-14/lib/libclang.so.1", 2);
    assert_eq!(find_libclang(&tree, &[]), Some(lib.display().to_string()));
}

#[test]
fn versioned_libclang_in_the_multiarch_and_local_folders_is_found() {
    let tree = Tree::new();
    let lib = tree.elf("usr/lib/x86_64-linux-gnu/libclang-14.so.1", 2);
    assert_eq!(find_libclang(&tree, &[]), Some(lib.display().to_string()));

    let tree = Tree::new();
    let lib = tree.elf("usr/local/lib/libclang.so", 2);
    assert_eq!(find_libclang(&tree, &[]), Some(lib.display().to_string()));
}

#[test]
fn a_32_bit_a_dangling_or_a_non_elf_libclang_does_not_count() {
    let tree = Tree::new();
    tree.elf("usr/lib/i386-linux-gnu/libclang-14.so.1", 1);
    tree.link(
        "usr/lib/llvm-14/lib/libclang.so",
        "../../x86_64-linux-gnu/libclang-14.so.1",
    );
    tree.write("usr/lib/libclang.so", b"INPUT(libclang-14.so)\n");
    assert_eq!(find_libclang(&tree, &[]), None);
    // The symlink's target appears: now it counts.
    let target = tree.elf("usr/lib/x86_64-linux-gnu/libclang-14.so.1", 2);
    assert!(find_libclang(&tree, &[]).is_some());
    std::fs::remove_file(target).unwrap();
    assert_eq!(find_libclang(&tree, &[]), None);
}

#[test]
fn libclang_path_is_the_only_place_looked_at_when_set() {
    let tree = Tree::new();
    tree.elf("usr/lib/llvm-14/lib/libclang.so.1", 2);
    std::fs::create_dir_all(tree.path("elsewhere")).unwrap();
    let elsewhere = tree.path("elsewhere").display().to_string();
    let env = [("LIBCLANG_PATH", elsewhere.as_str())];
    // bindgen would not look in /usr/lib here, so neither do we.
    assert_eq!(find_libclang(&tree, &env), None);
    let lines = check_lines("libclang", &tree, "-", &env, None);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("LIBCLANG_PATH={elsewhere} holds no"))),
        "{lines:?}"
    );
    let lib = tree.elf("elsewhere/libclang-15.so", 2);
    assert_eq!(find_libclang(&tree, &env), Some(lib.display().to_string()));
    // LIBCLANG_PATH may also name the file itself: then only that file counts.
    let file = lib.display().to_string();
    assert_eq!(
        find_libclang(&tree, &[("LIBCLANG_PATH", file.as_str())]),
        Some(file.clone())
    );
    let text = tree.write("elsewhere/libclang.so", b"not a library");
    let named = text.display().to_string();
    assert_eq!(
        find_libclang(&tree, &[("LIBCLANG_PATH", named.as_str())]),
        None
    );
}

#[test]
fn llvm_config_and_the_library_paths_are_searched() {
    let tree = Tree::new();
    let lib = tree.elf("opt/llvm/lib/libclang.so.18.1", 2);
    let prefix = tree.path("opt/llvm").display().to_string();
    let bin = tree.stub("llvm-config", &format!("echo '{prefix}'"));
    let llvm_config = bin.join("llvm-config").display().to_string();
    assert_eq!(
        find_libclang(&tree, &[("LLVM_CONFIG_PATH", llvm_config.as_str())]),
        Some(lib.display().to_string())
    );
    let lib_dir = tree.path("opt/llvm/lib").display().to_string();
    assert_eq!(
        find_libclang(&tree, &[("LD_LIBRARY_PATH", lib_dir.as_str())]),
        Some(lib.display().to_string())
    );
}

#[test]
fn libclang_without_clangs_builtin_headers_is_reported() {
    // libclang1-14 without libclang-common-14-dev: found, but it cannot read <stddef.h>.
    let tree = Tree::new();
    tree.elf("usr/lib/llvm-14/lib/libclang.so.1", 2);
    let lines = check_lines("libclang", &tree, "libclang-dev", &[], None);
    assert!(
        lines.len() == 1 && lines[0].contains("built-in headers (stddef.h)"),
        "{lines:?}"
    );
    // Debian's place for them…
    tree.write("usr/include/clang/14.0.6/include/stddef.h", b"");
    assert!(check_lines("libclang", &tree, "libclang-dev", &[], None).is_empty());
    // …and the upstream layout, beside the library.
    let tree = Tree::new();
    tree.elf("opt/llvm/lib/libclang.so", 2);
    tree.write("opt/llvm/lib/clang/18/include/stddef.h", b"");
    let dir = tree.path("opt/llvm/lib").display().to_string();
    assert!(check_lines(
        "libclang",
        &tree,
        "libclang-dev",
        &[("LIBCLANG_PATH", dir.as_str())],
        None
    )
    .is_empty());
}

#[test]
fn this_machine_has_the_libclang_bindgen_loads() {
    // setup.sh has run before the tests (test.sh), so the real system passes the real check.
    let ran = bash(
        "prereq_find_libclang / && prereq_clang_headers / \"$(prereq_find_libclang /)\"",
        &[],
        &[],
        None,
    );
    assert!(ran.ok, "{}", ran.stdout);
    assert!(!ran.stdout.contains("-cpp."), "{}", ran.stdout);
}

#[test]
fn cmake_must_be_as_new_as_llama_cpp_asks() {
    let tree = Tree::new();
    let bin = tree.stub(
        "cmake",
        "echo 'cmake version 3.10.2'; echo; echo 'CMake suite maintained by Kitware'",
    );
    let lines = check_lines("cmake", &tree, "cmake", &[], Some(&bin));
    assert!(
        lines.len() == 1
            && lines[0].contains("CMake 3.10.2 is older than the 3.14 llama.cpp needs"),
        "{lines:?}"
    );
    tree.stub("cmake", "echo 'cmake version 3.13.99'");
    assert_eq!(
        check_lines("cmake", &tree, "cmake", &[], Some(&bin)).len(),
        1
    );
    tree.stub("cmake", "echo 'cmake version 3.14.0'");
    assert!(check_lines("cmake", &tree, "cmake", &[], Some(&bin)).is_empty());
    // A cmake that does not run is no cmake.
    tree.stub(
        "cmake",
        "echo 'cmake: error while loading shared libraries' >&2; exit 127",
    );
    let lines = check_lines("cmake", &tree, "cmake", &[], Some(&bin));
    assert!(
        lines.len() == 1 && lines[0].contains("cmake is not installed"),
        "{lines:?}"
    );
    // This machine's real one is new enough.
    let real = Tree::new();
    assert!(check_lines("cmake", &real, "cmake", &[], None).is_empty());
}

#[test]
fn the_cmake_minimum_is_the_one_in_the_vendored_llama_cpp() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        // Only this platform's packages: the others were never downloaded.
        .args([
            "--filter-platform",
            &format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "llama-cpp-sys-2")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("llama-cpp-sys-2 is a dependency");
    let cmakelists = Path::new(manifest).with_file_name("llama.cpp/CMakeLists.txt");
    let text = std::fs::read_to_string(&cmakelists).unwrap();
    let needed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmake_minimum_required(VERSION "))
        // `VERSION 3.14...3.28`: the minimum, then the newest policy version it was tried with.
        .and_then(|rest| rest.split("...").next())
        .and_then(|min| {
            min.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
        })
        .expect("cmake_minimum_required in llama.cpp's CMakeLists.txt");
    let ours = bash("echo \"$PREREQ_CMAKE_MIN\"", &[], &[], None).stdout;
    assert_eq!(
        ours.trim(),
        needed,
        "update PREREQ_CMAKE_MIN in scripts/lib/prereqs.sh"
    );
}

#[test]
fn a_compiler_that_cannot_build_cxx17_with_openmp_is_reported() {
    // `c++` exists, but cannot compile (say, no libstdc++ headers): the build would fail.
    let tree = Tree::new();
    let bin = tree.stub(
        "c++",
        "echo 't.cpp:2:10: fatal error: vector: No such file or directory' >&2; exit 1",
    );
    let lines = check_lines("compilers", &tree, "build-essential", &[], Some(&bin));
    assert!(
        lines.len() == 1
            && lines[0].contains("vector: No such file or directory")
            && lines[0].contains("sudo apt-get install build-essential"),
        "{lines:?}"
    );
    // The same through CXX, which cmake and the cc crate honour.
    let other = Tree::new();
    let cxx = tree.path("bin/c++").display().to_string();
    assert_eq!(
        check_lines(
            "compilers",
            &other,
            "build-essential",
            &[("CXX", cxx.as_str())],
            None
        )
        .len(),
        1
    );
    // This machine's real compilers build it.
    assert!(check_lines("compilers", &other, "build-essential", &[], None).is_empty());
}

#[test]
fn python_must_really_run_pip() {
    let tree = Tree::new();
    let bin = tree.stub(
        "python3",
        "if [ \"$1\" = -m ] && [ \"$2\" = pip ]; then echo 'No module named pip' >&2; exit 1; fi; exit 0",
    );
    let lines = check_lines("python", &tree, "python3-pip", &[], Some(&bin));
    assert!(
        lines.len() == 1 && lines[0].contains("`python3 -m pip` does not work"),
        "{lines:?}"
    );
    // GEMMACTL_PYTHON is the Python `models pull` uses, so it is the one checked.
    let lines = check_lines(
        "python",
        &tree,
        "python3 python3-pip",
        &[("GEMMACTL_PYTHON", "no-such-python")],
        None,
    );
    assert!(
        lines.len() == 1 && lines[0].contains("no-such-python is not installed"),
        "{lines:?}"
    );
    assert!(check_lines("python", &tree, "python3-pip", &[], None).is_empty());
}

#[test]
fn cargo_must_be_as_new_as_the_workspace_asks() {
    let tree = Tree::new();
    tree.write(
        "Cargo.toml",
        b"[package]\nname = \"x\"\nrust-version = \"1.85\"\n",
    );
    let bin = tree.stub("cargo", "echo 'cargo 1.63.0'");
    let lines = check_lines("cargo", &tree, "-", &[], Some(&bin));
    assert!(
        lines.len() == 1 && lines[0].contains("cargo 1.63.0 is older than the Rust 1.85"),
        "{lines:?}"
    );
    tree.stub("cargo", "echo 'cargo 1.85.0 (d73d2caf9 2024-12-31)'");
    assert!(check_lines("cargo", &tree, "-", &[], Some(&bin)).is_empty());
}

#[test]
fn vulkan_needs_this_architectures_loader_and_an_icd_whose_library_exists() {
    let package = "libvulkan1 mesa-vulkan-drivers";
    let icd = br#"{"file_format_version": "1.0.0", "ICD": {"library_path": "/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so", "api_version": "1.3.230"}}"#;
    let tree = Tree::new();
    tree.elf("usr/lib/x86_64-linux-gnu/libvulkan.so.1.3.239", 2);
    tree.link(
        "usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "libvulkan.so.1.3.239",
    );
    tree.write("usr/share/vulkan/icd.d/lvp_icd.x86_64.json", icd);
    // The ICD file is there, its library is not.
    assert_eq!(check_lines("vulkan", &tree, package, &[], None).len(), 1);
    tree.elf("usr/lib/x86_64-linux-gnu/libvulkan_lvp.so", 2);
    assert!(check_lines("vulkan", &tree, package, &[], None).is_empty());

    // Only the i386 loader.
    let tree = Tree::new();
    tree.elf("usr/lib/i386-linux-gnu/libvulkan.so.1", 1);
    tree.write("usr/share/vulkan/icd.d/lvp_icd.x86_64.json", icd);
    tree.elf("usr/lib/x86_64-linux-gnu/libvulkan_lvp.so", 2);
    assert_eq!(check_lines("vulkan", &tree, package, &[], None).len(), 1);

    // An ICD naming its library without a folder: the loader looks in the library folders.
    let tree = Tree::new();
    tree.elf("usr/lib/x86_64-linux-gnu/libvulkan.so.1", 2);
    tree.write(
        "usr/share/vulkan/icd.d/lvp_icd.json",
        br#"{"ICD": {"library_path": "libvulkan_lvp.so"}}"#,
    );
    assert_eq!(check_lines("vulkan", &tree, package, &[], None).len(), 1);
    tree.elf("usr/lib/x86_64-linux-gnu/libvulkan_lvp.so", 2);
    assert!(check_lines("vulkan", &tree, package, &[], None).is_empty());
}

#[test]
fn a_fresh_debian_12_tree_asks_for_libclang_and_vulkan() {
    // The issue's machine: Mesa's OpenGL brought libclang-cpp and LLVM, nothing else of Clang,
    // and no Vulkan. The report names both packages, each with its command.
    let tree = Tree::new();
    tree.elf("usr/lib/llvm-15/lib/libclang-cpp.so.15", 2);
    tree.elf("usr/lib/x86_64-linux-gnu/libclang-cpp.so.15", 2);
    tree.elf("usr/lib/x86_64-linux-gnu/libLLVM-15.so.1", 2);
    tree.write("Cargo.toml", b"[workspace]\n");
    let toml = tree.path("Cargo.toml");
    let ran = bash(
        "prereq_report \"$1\" \"$2\"",
        &[tree.root(), toml.to_str().unwrap()],
        &[],
        None,
    );
    assert!(ran.ok);
    let packages: Vec<&str> = ran
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    // The compilers, CMake, Python and cargo are this machine's real ones, which are fine.
    assert_eq!(
        packages,
        ["libclang-dev", "libvulkan1 mesa-vulkan-drivers"],
        "{}",
        ran.stdout
    );
    assert!(ran
        .stdout
        .lines()
        .all(|l| l.contains("sudo apt-get install")));
}

#[test]
fn versions_compare_as_numbers() {
    let ge = |a: &str, b: &str| bash("prereq_version_ge \"$1\" \"$2\"", &[a, b], &[], None).ok;
    assert!(ge("3.25.1", "3.14"));
    assert!(ge("3.14", "3.14"));
    assert!(!ge("3.9.6", "3.14"));
    assert!(ge("1.95.0", "1.85"));
    assert!(!ge("1.8.0", "1.85"));
}
