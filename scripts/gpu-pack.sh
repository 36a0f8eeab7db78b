#!/usr/bin/env bash
# Gathers what scripts/gpu-check.sh needs on a GPU machine that has nvcc but no Rust and no
# network, into target/gpu-pack/pack (at most 64 MiB, so it can travel with a copy of the repo):
#
#   engine/   gemma-engine built here with `dynamic-backends` (every ggml backend a run-time module),
#             its shared libraries and CPU-variant modules; the CUDA module is built there
#   ggml/     the llama.cpp ggml sources the crate bundles (same version as the engine), enough to
#             build the CUDA backend module
#   model/    Gemma 3 270M cut to its skeleton: header, metadata, vocabulary and tensor table, no
#             tensor data (scripts/gpu/gguf_skeleton.py; filled back out on the GPU machine)
#
# Usage: scripts/gpu-pack.sh [MODEL.gguf]   (default: the gemma3-270m file in the download cache)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/llama-libs.sh
. scripts/lib/cpu-features.sh
# Built here for another machine: ggml's portable options, not this CPU's
# (.cargo/cpu-features.toml); the process environment wins over cargo's [env].
export_portable_cpu_features
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }
command -v cargo >/dev/null 2>&1 || die "cargo is not installed: gpu-pack.sh runs on the build machine (the GPU machine only runs gpu-check.sh)"

out="$root/target/gpu-pack"
pack="$out/pack"
build="$out/build"

model=${1:-}
if [ -z "$model" ]; then
  cache=${GEMMACTL_CACHE:-$HOME/.cache/gemmactl}
  model="$cache/models/gemma-3-270m-q4_k_m.gguf"
fi
[ -f "$model" ] || die "model file $model not found: run \`gemmactl models pull gemma3-270m\` or pass a GGUF path"

say "building gemma-engine with dynamic-backends (its own target folder; the first build compiles every CPU variant: long)"
# $ORIGIN rpath: the engine finds libllama/libggml*.so in its own folder, wherever the pack lands.
RUSTFLAGS='-C link-arg=-Wl,-rpath,$ORIGIN' cargo build --release --locked -p gemma-engine --features dynamic-backends --target-dir "$build"

rm -rf "$pack" && mkdir -p "$pack/engine" "$pack/ggml/src" "$pack/model"
cp "$build/release/gemma-engine" "$pack/engine/"
# The shared libraries the engine needs (no symlinks, which may not travel), and the CPU-variant
# modules the build script installed.
out_dir=$(ls -d "$build"/release/build/llama-cpp-sys-2-*/out | head -1)
copy_llama_libs "$build/release/gemma-engine" "$out_dir" "$pack/engine" || exit 1
cp "$out_dir"/backends/libggml-cpu*.so "$pack/engine/"
strip --strip-unneeded "$pack"/engine/*.so* "$pack/engine/gemma-engine" 2>/dev/null || true
ls "$pack"/engine/libggml-cpu*.so >/dev/null 2>&1 || die "no CPU backend modules (libggml-cpu-*.so) came out of the build: look in $build/release/build/llama-cpp-sys-2-*/out"

src=$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp 2>/dev/null | head -1)
[ -d "$src/ggml" ] || die "the llama.cpp sources of llama-cpp-sys-2 0.1.161 are not in ~/.cargo/registry: run cargo build --workspace once"
# Only what the CUDA backend module needs: ggml's build files, headers, core sources, ggml-cuda.
find "$src/ggml" -maxdepth 1 -type f -exec cp {} "$pack/ggml/" \;
cp -r "$src/ggml/cmake" "$src/ggml/include" "$pack/ggml/"
# The crate leaves out ggml's pkg-config template, which a stand-alone ggml build configures.
[ -f "$pack/ggml/ggml.pc.in" ] || printf 'prefix=@CMAKE_INSTALL_PREFIX@\nName: ggml\nDescription: ggml (stand-in written by gemmactl scripts/gpu-pack.sh)\nVersion: @GGML_VERSION@\n' > "$pack/ggml/ggml.pc.in"
cp "$src"/ggml/src/*.c "$src"/ggml/src/*.cpp "$src"/ggml/src/*.h "$src"/ggml/src/*.in "$src/ggml/src/CMakeLists.txt" "$pack/ggml/src/" 2>/dev/null
# ggml's CMake enters a backend's folder only when that backend is switched on.
cp -r "$src/ggml/src/ggml-cuda" "$pack/ggml/src/"
cp "$src/LICENSE" "$pack/ggml/LICENSE.llama.cpp"

say "cutting $model to its skeleton"
python3 "$root/scripts/gpu/gguf_skeleton.py" cut "$model" "$pack/model/gemma-3-270m-q4_k_m.skeleton.gguf"

{
  echo "llama-cpp-sys-2 0.1.161 (llama.cpp bundled by the crate)"
  echo "engine built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) with features dynamic-backends"
  echo "model skeleton of $(basename "$model") ($(stat -c %s "$model") bytes when filled)"
} > "$pack/MANIFEST"
size=$(du -sb "$pack" | cut -f1)
say "pack ready: $pack ($((size / 1048576)) MiB)"
[ "$size" -le $((64 * 1048576)) ] || die "the pack is $((size / 1048576)) MiB, over the 64 MiB that may travel"
