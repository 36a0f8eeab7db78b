#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench`, the baseline `gemmactl bench --llama-bench` measures
# gemma-engine against, and prints its path on stdout (progress goes to stderr).
#
# The llama-cpp-2 crate's copy of llama.cpp has the library only, no tools; the sdist of the
# `llama-cpp-python` package carries the full tree (vendor/llama.cpp). It is downloaded with pip
# and built with CMake into a cache folder, never into the repository, with the same ggml CPU
# options as gemma-engine's build: ggml's portable x86 default (GGML_NATIVE=OFF), plus whatever
# .cargo/cpu-features.toml turns on where a CPU-tuned build wrote one, so the two are compared
# like for like. Its llama.cpp version differs from the crate's: docs/benchmarks.md says which.
#
#   scripts/lib/llama-bench.sh              # build once (long the first time), print the path
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 scripts/lib/llama-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${GEMMACTL_TEST_CACHE:-$HOME/.cache/gemmactl-test}
jobs=${LLAMA_BENCH_JOBS:-2}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

command -v cmake >/dev/null 2>&1 || die "cmake is missing: run scripts/setup.sh first"
# The same ggml options as gemma-engine's build; none means ggml's portable default.
options=()
if [ -f .cargo/cpu-features.toml ]; then
  while read -r key value; do
    options+=("-D$key=$value")
  done < <(sed -n 's/^\(GGML_[A-Z0-9_]*\) = "\([A-Z]*\)"$/\1 \2/p' .cargo/cpu-features.toml)
fi
tag=$(printf '%s\n' "${options[@]}" | sha256sum | cut -c1-12)
src="$cache/llama-cpp-python-$version"
build="$cache/llama-bench-$version-$tag"
binary="$build/bin/llama-bench"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
  say "downloading the llama-cpp-python $version sdist (llama.cpp's full tree, ~77 MB)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp" >&2 \
    || die "pip could not download the llama-cpp-python $version sdist"
  mkdir -p "$src"
  tar -xzf "$tmp"/llama_cpp_python-"$version".tar.gz -C "$src" --strip-components=1
fi

say "building llama-bench ($version, ${options[*]:-ggml defaults}) into $build (several minutes)"
# --fresh: an interrupted earlier build may have cached other CPU options in CMakeCache.txt,
# which a plain re-configure would keep whatever this run passes.
cmake --fresh -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DGGML_OPENMP=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  "${options[@]}" >"$build.configure.log" 2>&1 \
  || die "CMake could not configure llama.cpp (see $build.configure.log)"
cmake --build "$build" --target llama-bench -j "$jobs" >"$build.build.log" 2>&1 \
  || die "llama-bench did not build (see $build.build.log)"
echo "$binary"
