#!/usr/bin/env bash
# Builds a GPU build of gemma-engine and puts it next to gemmactl as gemma-engine-<backend>.
#
#   scripts/build-gpu.sh cuda|vulkan|openvino
#
# Each backend builds into its own target folder (target/gpu-<backend>), so the default CPU build
# and its llama.cpp are never rebuilt or changed. GPU builds are never part of CI or the default
# build. Environment:
#   GEMMA_GPU_INSTALL_DIR  where gemma-engine-<backend> goes (default: next to target/debug/gemmactl)
#   CUDA_ARCHS             CUDA architectures, e.g. "90" (default: native with a GPU, else 75;80;86;89;90)
#   CUDA_HOME              an installed CUDA toolkit to use instead of the Python-index packages
#   BUILD_JOBS             parallel compile jobs (default: all cores)
# Prerequisites per backend are in README.md ("GPU builds").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

backend=${1:-}
case "$backend" in
  cuda | vulkan | openvino) ;;
  *) die "say which build: scripts/build-gpu.sh cuda|vulkan|openvino" ;;
esac
command -v cargo >/dev/null 2>&1 || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }
command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust with rustup"

target="$root/target/gpu-$backend"
install_dir=${GEMMA_GPU_INSTALL_DIR:-$root/target/debug}
libs_name="gemma-engine-$backend.libs"
features=""
rpath='$ORIGIN/'"$libs_name"

case "$backend" in
cuda)
  features="cuda-dynamic"
  if [ -n "${CUDA_HOME:-}" ]; then
    cuda_root="$CUDA_HOME"
    [ -x "$cuda_root/bin/nvcc" ] || die "CUDA_HOME=$cuda_root has no bin/nvcc: point it at a CUDA toolkit, or unset it to use the Python-index packages"
  else
    # nvcc, the runtime, CCCL and cuBLAS from the Python package index: no GPU and no CUDA
    # installer needed. `pip install --target` keeps them in one folder under target/.
    pip_dir="$root/target/gpu-build/cuda-pip"
    if [ ! -x "$pip_dir/nvidia/cu13/bin/nvcc" ]; then
      python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is missing: sudo apt-get install python3-pip"
      say "installing nvcc 13, the CUDA runtime, CCCL and cuBLAS from the Python package index (~1.1 GB)"
      python3 -m pip install --no-input --disable-pip-version-check --target "$pip_dir" \
        "nvidia-cuda-nvcc>=13,<14" "nvidia-cuda-runtime>=13,<14" "nvidia-cuda-cccl>=13,<14" "nvidia-cublas>=13,<14" >&2
    fi
    cu="$pip_dir/nvidia/cu13"
    [ -x "$cu/bin/nvcc" ] || die "the nvidia-cuda-nvcc package did not install $cu/bin/nvcc: check the pip output above"
    # A folder laid out like a CUDA install (CMake's FindCUDAToolkit wants lib64/ and unversioned
    # libraries to link against), made of symlinks into the pip folder.
    cuda_root="$root/target/gpu-build/cuda-root"
    rm -rf "$cuda_root" && mkdir -p "$cuda_root/lib64"
    ln -s "$cu/bin" "$cuda_root/bin"
    ln -s "$cu/include" "$cuda_root/include"
    ln -s "$cu/nvvm" "$cuda_root/nvvm"
    for lib in "$cu"/lib/*; do
      ln -s "$lib" "$cuda_root/lib64/$(basename "$lib")"
      case "$lib" in
        *.so.*) ln -sf "$lib" "$cuda_root/lib64/$(basename "$lib" | sed 's/\.so\..*/.so/')" ;;
      esac
    done
    ln -s lib64 "$cuda_root/lib"
    rpath="$rpath:$cu/lib"
  fi
  if [ -z "${CUDA_ARCHS:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then CUDA_ARCHS=native; else CUDA_ARCHS="75;80;86;89;90"; fi
  fi
  export PATH="$cuda_root/bin:$PATH" CUDA_PATH="$cuda_root" CUDAToolkit_ROOT="$cuda_root"
  export CMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS"
  say "CUDA: $("$cuda_root/bin/nvcc" --version | tail -1) · architectures $CUDA_ARCHS"
  ;;
vulkan)
  features="vulkan"
  command -v glslc >/dev/null 2>&1 || die "glslc (shaderc) is missing: install it (Debian 13/Ubuntu 24.04: apt-get install glslc) or the LunarG Vulkan SDK"
  header=$(ls "${VULKAN_SDK:-/usr}"/include/vulkan/vulkan_core.h 2>/dev/null | head -1 || true)
  [ -n "$header" ] || die "Vulkan headers are missing: install libvulkan-dev (Debian 13/Ubuntu 24.04) or the LunarG Vulkan SDK and set VULKAN_SDK"
  if ! grep -q VK_EXT_layer_settings "$header"; then
    die "the Vulkan headers at $header are too old (llama.cpp needs VK_EXT_layer_settings; Debian 12 ships 1.3.239): use Debian 13, Ubuntu 24.04, or the LunarG Vulkan SDK with VULKAN_SDK set"
  fi
  ;;
openvino)
  # No cargo feature exists: the crate forwards GGML_OPENVINO=ON to CMake. Untried — see README.
  [ -n "${OpenVINO_DIR:-}" ] || die "an OpenVINO build needs the OpenVINO developer package (2025.x) with OpenVINO_DIR set to its cmake folder; this path has not been tried yet (README: GPU builds)"
  export GGML_OPENVINO=ON
  ;;
esac

jobs=${BUILD_JOBS:-$(nproc)}
say "building gemma-engine for $backend into $target (long: llama.cpp's $backend backend is compiled from source)"
started=$(date +%s)
# rpath: the engine finds llama.cpp's shared libraries in gemma-engine-<backend>.libs next to it.
RUSTFLAGS="-C link-arg=-Wl,-rpath,$rpath" cargo build --release --locked -j "$jobs" -p gemma-engine \
  ${features:+--features "$features"} --target-dir "$target"
elapsed=$(( $(date +%s) - started ))

mkdir -p "$install_dir/$libs_name"
cp -f "$target/release/gemma-engine" "$install_dir/gemma-engine-$backend"
# dynamic-link builds put libllama/libggml*.so next to the binary: they travel in the .libs folder.
for so in "$target"/release/lib*.so*; do
  [ -e "$so" ] && cp -f "$so" "$install_dir/$libs_name/"
done
say "built in $((elapsed / 60)) min $((elapsed % 60)) s: $install_dir/gemma-engine-$backend"
"$install_dir/gemma-engine-$backend" --probe || echo "note: the build does not start here (expected without its GPU driver); gemmactl doctor shows why" >&2
