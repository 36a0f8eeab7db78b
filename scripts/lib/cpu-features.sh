# Sourced by scripts/setup.sh. write_cpu_features decides which CPU extensions llama.cpp is
# compiled for and writes them to .cargo/cpu-features.toml, which .cargo/config.toml includes
# (cargo hands its [env] table to llama-cpp-sys-2's build script, which passes GGML_* to CMake).
#
# CPUID alone is not enough: a CPU may advertise AVX-512 or AMX that the OS or a hypervisor does
# not let a program use, and a build that trusts CPUID then dies with SIGILL. So the probe
# (src/hardware/cpu_usable.rs, the same code `gemmactl doctor` runs) checks XCR0 and Linux's AMX
# permission and runs each extension's instructions in a child process; only what runs is used.
#
# GEMMACTL_PORTABLE=1 writes ggml's x86-64 default instead (AVX2, FMA, F16C; nothing newer), for
# binaries meant for other machines; it sticks (later setup.sh runs keep the portable set) until
# GEMMACTL_PORTABLE=0. Every option is always written, ON or OFF, so a change of any one of them
# makes cargo rebuild llama.cpp.
cpu_features_file=.cargo/cpu-features.toml
# This library's folder: the probe's sources are found from here, wherever it runs.
cpu_features_lib=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" >/dev/null && pwd)

write_cpu_features() {
  local tmp mode=this-machine note=""
  tmp=$(mktemp -d)
  local portable=${GEMMACTL_PORTABLE:-}
  # A portable choice sticks until GEMMACTL_PORTABLE=0: demo.sh, test.sh and bench.sh run setup.sh
  # again, and must not undo it.
  if [ -z "$portable" ] && grep -q '^# Written by scripts/setup.sh (portable)' "$cpu_features_file" 2>/dev/null; then
    portable=1
  fi
  if [ "$portable" = 1 ]; then
    mode=portable
    portable_cpu_env >"$tmp/env"
  elif ! rustc --edition 2021 -O --cfg cpu_probe_main "$cpu_features_lib/../../src/hardware/cpu_usable.rs" -o "$tmp/cpu-probe" 2>"$tmp/log"; then
    echo "warning: the CPU probe did not compile ($(grep -m1 . "$tmp/log")): building llama.cpp for ggml's portable default" >&2
    mode="portable, as the CPU probe did not compile"
    portable_cpu_env >"$tmp/env"
  else
    "$tmp/cpu-probe" --cargo-env >"$tmp/env"
    # The CPU and the OS run AMX; the compiler must also build working AMX code (GCC 12 does not).
    if grep -q '^GGML_AMX_INT8 = "ON"' "$tmp/env" && ! amx_compiles "$tmp"; then
      note="# AMX left off: $(cat "$tmp/amx-why")"
      echo "note: AMX is usable on this CPU, but $(cat "$tmp/amx-why"); llama.cpp is built without AMX" >&2
      sed -i 's/^\(GGML_AMX_[A-Z0-9]*\) = "ON"/\1 = "OFF"/' "$tmp/env"
    fi
  fi
  {
    echo "# Written by scripts/setup.sh ($mode): the ggml CMake options llama.cpp is built with."
    echo "# Rewritten by every setup.sh run; GEMMACTL_PORTABLE=1 ./scripts/setup.sh writes the"
    echo "# portable set (kept until GEMMACTL_PORTABLE=0). Included by .cargo/config.toml."
    [ -z "$note" ] || echo "$note"
    cat "$tmp/env"
  } >"$tmp/new"
  if ! cmp -s "$tmp/new" "$cpu_features_file"; then
    mkdir -p "$(dirname "$cpu_features_file")"
    mv "$tmp/new" "$cpu_features_file"
    printf '\033[1m==> %s\033[0m\n' "llama.cpp will be built for: $(sed -n 's/^GGML_\([A-Z0-9_]*\) = "ON"/\1/p' "$cpu_features_file" | tr '\n' ' ')($mode)" >&2
  fi
  rm -rf "$tmp"
  forget_stale_llama_configuration
}

# llama-cpp-sys-2 configures CMake once per build folder and skips the configure step after that,
# so new options would reach its build script but never CMake. Where a build folder's CMake cache
# disagrees with .cargo/cpu-features.toml, delete that cache and cargo's records of the crate
# (its fingerprint folders): the next cargo build runs the build script, which configures again
# (make recompiles only what the options change), recompiles the crate's bindings, and so relinks
# the binaries — they link llama.cpp statically, and cargo does not watch the static libraries.
forget_stale_llama_configuration() {
  local target cache option value run profile stale=()
  target=$(cargo_target_dir)
  # target/<profile>/build and target/<triple>/<profile>/build (and the coverage build's
  # target/llvm-cov-target/<profile>/build). Not the portable engine of bench-build.sh, the GPU
  # builds or the GPU pack: they are built with the portable set on purpose.
  for cache in "$target"/*/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt \
    "$target"/*/*/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
    [ -f "$cache" ] || continue
    case "$cache" in "$target"/portable/* | "$target"/gpu-*) continue ;; esac
    while read -r option value; do
      if ! grep -q "^$option:BOOL=$value\$" "$cache"; then
        run=$(dirname "$(dirname "$(dirname "$cache")")")
        profile=$(dirname "$(dirname "$run")")
        rm -f "$cache"
        rm -rf "$profile"/.fingerprint/llama-cpp-sys-2-*
        stale+=("$run")
        break
      fi
    done < <(sed -n 's/^\(GGML_[A-Z0-9_]*\) = "\([A-Z]*\)"$/\1 \2/p' "$cpu_features_file")
  done
  if [ ${#stale[@]} -gt 0 ]; then
    echo "note: llama.cpp was configured with other CPU options in ${stale[*]}: the next build reconfigures and rebuilds it" >&2
  fi
}

# Where cargo puts its builds: what `cargo metadata` says (it knows CARGO_TARGET_DIR,
# CARGO_BUILD_TARGET_DIR and build.target-dir), else CARGO_TARGET_DIR or ./target.
cargo_target_dir() {
  local dir
  dir=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' | head -n1) || true
  echo "${dir:-${CARGO_TARGET_DIR:-target}}"
}

# amx_compiles DIR: compiles scripts/lib/amx-tile-check.cpp with the C++ compiler llama.cpp's
# build will use (CMake's CMAKE_CXX_COMPILER, which llama-cpp-sys-2 passes on, else the cc
# crate's CXX_<target> or CXX, else c++), as optimized as llama.cpp's Release build (-O3), and
# runs it. On failure DIR/amx-why says why.
amx_compiles() {
  local dir=$1 cxx=${CMAKE_CXX_COMPILER:-${CXX_x86_64_unknown_linux_gnu:-${CXX:-c++}}} status
  if ! "$cxx" -O3 -mamx-tile -mamx-int8 -mavx512f "$cpu_features_lib/amx-tile-check.cpp" -o "$dir/amx-check" 2>"$dir/amx-log"; then
    echo "the C++ compiler ($cxx) cannot compile AMX code ($(grep -m1 . "$dir/amx-log"))" >"$dir/amx-why"
    return 1
  fi
  status=0
  { "$dir/amx-check"; } >/dev/null 2>&1 || status=$?
  case $status in
    0) return 0 ;;
    132) echo "the C++ compiler ($cxx, $("$cxx" -dumpfullversion 2>/dev/null || echo '?')) builds AMX code that dies with SIGILL (it drops the stores that fill in the tile configuration: seen with GCC 12.2 at -O2 and -O3)" >"$dir/amx-why" ;;
    *) echo "the AMX check built by $cxx failed (exit status $status)" >"$dir/amx-why" ;;
  esac
  return 1
}

# ggml's portable x86-64 default as cargo's [env] table, every option written.
portable_cpu_env() {
  local option
  echo "[env]"
  for option in $portable_on; do echo "$option = \"ON\""; done
  for option in $portable_off; do echo "$option = \"OFF\""; done
}

portable_on="GGML_AVX GGML_SSE42 GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2"
portable_off="GGML_AVX_VNNI GGML_AVX512 GGML_AVX512_VBMI GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AMX_TILE GGML_AMX_INT8 GGML_AMX_BF16"

# For builds meant for other machines or kept apart (GPU builds, the pack, bench-build.sh's
# portable engine): ggml's portable default, whatever
# .cargo/cpu-features.toml says (the environment wins over cargo's [env]).
export_portable_cpu_features() {
  local option
  for option in $portable_on; do export "$option=ON"; done
  for option in $portable_off; do export "$option=OFF"; done
}
