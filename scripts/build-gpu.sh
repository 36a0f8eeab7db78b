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
. scripts/lib/llama-libs.sh
. scripts/lib/cpu-features.sh
# ggml's portable CPU options, not .cargo/cpu-features.toml's: the GPU does the work, and these
# build folders are never reconfigured by setup.sh (the environment wins over cargo's [env]).
export_portable_cpu_features

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
# Folders outside the build that its libraries load from (the pip CUDA or OpenVINO libraries).
lib_dirs=""

case "$backend" in
cuda)
  features="cuda-dynamic"
  if [ -n "${CUDA_HOME:-}" ]; then
    cuda_root="$CUDA_HOME"
    [ -x "$cuda_root/bin/nvcc" ] || die "CUDA_HOME=$cuda_root has no bin/nvcc: point it at a CUDA toolkit, or unset it to use the Python-index packages"
    lib_dirs=":$cuda_root/lib64"
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
    lib_dirs=":$cu/lib"
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
  # No cargo feature exists: the crate forwards GGML_* variables to CMake, so GGML_OPENVINO=ON
  # turns on llama.cpp's OpenVINO backend. It is linked dynamically (libggml-openvino.so pulls
  # in OpenVINO's own shared libraries), which needs the engine's `dynamic-link` feature.
  features="dynamic-link"
  if [ -z "${OpenVINO_DIR:-}" ]; then
    # The OpenVINO wheel on the Python package index carries the C++ headers, the CMake package
    # and the CPU/GPU/NPU plugins: no Intel installer needed.
    ov_pip="$root/target/gpu-build/openvino-pip"
    if [ ! -f "$ov_pip/openvino/cmake/OpenVINOConfig.cmake" ]; then
      python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is missing: sudo apt-get install python3-pip"
      say "installing OpenVINO (runtime, headers, CMake package) from the Python package index (~80 MB)"
      python3 -m pip install --no-input --disable-pip-version-check --target "$ov_pip" "openvino>=2025.4,<2027" >&2
    fi
    export OpenVINO_DIR="$ov_pip/openvino/cmake"
    lib_dirs=":$ov_pip/openvino/libs"
  fi
  [ -f "$OpenVINO_DIR/OpenVINOConfig.cmake" ] || die "OpenVINO_DIR=$OpenVINO_DIR has no OpenVINOConfig.cmake: point it at the cmake folder of an OpenVINO 2025.4+ install, or unset it to use the Python-index package"
  # llama.cpp's OpenVINO backend also links OpenCL (for Intel GPUs' shared buffers).
  if ! { [ -f /usr/include/CL/cl.h ] && ls /usr/lib/*/libOpenCL.so >/dev/null 2>&1; }; then
    die "OpenCL development files are missing: sudo apt-get install ocl-icd-opencl-dev"
  fi
  export GGML_OPENVINO=ON
  say "OpenVINO: $OpenVINO_DIR"
  ;;
esac

command -v patchelf >/dev/null 2>&1 || die "patchelf is missing (it points the copied libraries at each other): sudo apt-get install patchelf"
jobs=${BUILD_JOBS:-$(nproc)}
say "building gemma-engine for $backend into $target (long: llama.cpp's $backend backend is compiled from source)"
started=$(date +%s)
# rpath: the engine finds llama.cpp's shared libraries in gemma-engine-<backend>.libs next to it.
RUSTFLAGS="-C link-arg=-Wl,-rpath,\$ORIGIN/$libs_name$lib_dirs" cargo build --release --locked -j "$jobs" -p gemma-engine \
  ${features:+--features "$features"} --target-dir "$target"
elapsed=$(( $(date +%s) - started ))

rm -rf "${install_dir:?}/$libs_name" && mkdir -p "$install_dir/$libs_name"
cp -f "$target/release/gemma-engine" "$install_dir/gemma-engine-$backend"
# dynamic-link builds need libllama/libggml*.so: they travel in the .libs folder beside it.
out_dir=$(ls -dt "$target"/release/build/llama-cpp-sys-2-*/out | head -1)
copy_llama_libs "$install_dir/gemma-engine-$backend" "$out_dir" "$install_dir/$libs_name"
# The engine's runpath serves only its own NEEDED libraries; each library gets its own, so that
# libggml finds libggml-cuda beside it, and libggml-cuda finds cuBLAS.
for lib in "$install_dir/$libs_name"/*; do
  patchelf --set-rpath "\$ORIGIN$lib_dirs" "$lib"
done
say "built in $((elapsed / 60)) min $((elapsed % 60)) s: $install_dir/gemma-engine-$backend"
"$install_dir/gemma-engine-$backend" --probe || echo "note: the build does not start here (expected without its GPU driver); gemmactl doctor shows why" >&2
