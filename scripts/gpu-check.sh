#!/usr/bin/env bash
# One-shot GPU check for a Linux machine with an NVIDIA GPU, its driver, nvcc, CMake and Python 3,
# but no Rust and no network. It uses the pack made by scripts/gpu-pack.sh (target/gpu-pack/pack,
# which travels with the repo copy):
#   1. builds llama.cpp's CUDA backend module from the pack's ggml sources (the same llama.cpp the
#      engine was built from), for this GPU's architecture only;
#   2. fills the Gemma 3 270M skeleton back out to a full-size model (same tensor names, shapes and
#      types; every weight byte 0x11 — speed depends on shapes and types, not on values);
#   3. runs the pack's gemma-engine on the GPU (CUDA module loaded, all layers offloaded) and on
#      the CPU (CPU modules only), and prints time to first token, prefill and decode tokens/s,
#      peak memory, and the GPU's speedup for prefill and decode separately.
# Aims to finish in well under 10 minutes. Results also go to $OUT/gpu-check.json when OUT is set.
#
# Usage: scripts/gpu-check.sh [PACK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
t0=$(date +%s)

pack=$(cd "${1:-$root/target/gpu-pack/pack}" 2>/dev/null && pwd) || die "no pack at ${1:-target/gpu-pack/pack}: make it with scripts/gpu-pack.sh on a machine with Rust, and bring target/gpu-pack along"
[ -x "$pack/engine/gemma-engine" ] || die "$pack/engine/gemma-engine is missing: remake the pack with scripts/gpu-pack.sh"
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this check needs an NVIDIA GPU and its driver"
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
[ -n "$nvcc" ] || die "nvcc not found: put the CUDA toolkit's bin folder on PATH"
command -v cmake >/dev/null 2>&1 || die "cmake not found"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

gpu=$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | head -1)
cc=$(echo "$gpu" | cut -d, -f2 | tr -d ' .')
say "GPU: $gpu · nvcc $("$nvcc" --version | grep -o 'release [0-9.]*') · architecture sm_$cc"

work="$root/target/gpu-check"
mkdir -p "$work"
cuda_build="$work/ggml-cuda-build"
if [ ! -f "$cuda_build/done-$cc" ]; then
  say "building the CUDA backend module for sm_$cc only (ggml-cuda from the pack)"
  b0=$(date +%s)
  # CUDA's virtual-memory pool links the driver library (libcuda.so); a toolkit without its stub
  # (e.g. nvcc from the Python index) builds without it, at a negligible cost for this check.
  vmm=ON
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so ' && [ ! -e "$(dirname "$nvcc")/../lib64/stubs/libcuda.so" ] && [ ! -e "$(dirname "$nvcc")/../lib/stubs/libcuda.so" ]; then vmm=OFF; fi
  cmake -S "$pack/ggml" -B "$cuda_build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_BACKEND_DL=ON -DGGML_CUDA=ON -DGGML_CPU=OFF -DGGML_NATIVE=OFF -DGGML_CUDA_NCCL=OFF -DGGML_CUDA_NO_VMM=$([ $vmm = ON ] && echo OFF || echo ON) \
    -DCMAKE_CUDA_ARCHITECTURES="$cc" -DCMAKE_CUDA_COMPILER="$nvcc" -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$work/cmake.log" 2>&1 \
    || { tail -30 "$work/cmake.log"; die "CMake could not configure the CUDA backend (full log: $work/cmake.log)"; }
  cmake --build "$cuda_build" --target ggml-cuda -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; die "the CUDA backend did not compile (full log: $work/build.log)"; }
  touch "$cuda_build/done-$cc"
  say "CUDA module built in $(( $(date +%s) - b0 )) s"
fi
module=$(find "$cuda_build" -name 'libggml-cuda.so' | head -1)
[ -n "$module" ] || die "the build produced no libggml-cuda.so (see $work/build.log)"

# Two module folders: the CPU run must not see the CUDA module, or llama.cpp would still send big
# prompt batches to the GPU.
rm -rf "$work/backends-cpu" "$work/backends-gpu" && mkdir -p "$work/backends-cpu" "$work/backends-gpu"
cp "$pack"/engine/libggml-cpu*.so "$work/backends-cpu/"
cp "$pack"/engine/libggml-cpu*.so "$module" "$work/backends-gpu/"

model="$work/gemma-3-270m-q4_k_m.filled.gguf"
[ -f "$model" ] || python3 "$root/scripts/gpu/gguf_skeleton.py" fill "$pack"/model/*.skeleton.gguf "$model" >&2

# llama.cpp picks the CPU variant by what CPUID advertises; inside some VMs an advertised feature
# (AMX, seen on Sapphire Rapids guests) is not usable and the engine dies with SIGILL. Drop the
# most demanding variants until a tiny CPU request succeeds.
smoke() { GEMMA_ENGINE_BACKENDS="$1" timeout 120 python3 "$root/scripts/gpu/bench_engine.py" "$pack/engine/gemma-engine" "$model" 0 1 8 2 >/dev/null 2>&1; }
for variant in sapphirerapids zen4 cooperlake cannonlake icelake cascadelake skylakex alderlake; do
  smoke "$work/backends-cpu" && break
  say "the CPU variant $variant does not run here (illegal instruction?): leaving it out"
  rm -f "$work/backends-cpu/libggml-cpu-$variant.so" "$work/backends-gpu/libggml-cpu-$variant.so"
done
smoke "$work/backends-cpu" || die "the pack's engine cannot run a request on this CPU: run it by hand with --verbose to see why"

say "GPU probe:"
GEMMA_ENGINE_BACKENDS="$work/backends-gpu" "$pack/engine/gemma-engine" --probe >&2
runs=${RUNS:-5}
say "GPU run: all layers on the GPU ($runs measured requests after a warm-up)"
gpu_json=$(GEMMA_ENGINE_BACKENDS="$work/backends-gpu" timeout 240 python3 "$root/scripts/gpu/bench_engine.py" "$pack/engine/gemma-engine" "$model" 999 "$runs" 400 128)
say "CPU run: same engine, CPU modules only"
cpu_json=$(GEMMA_ENGINE_BACKENDS="$work/backends-cpu" timeout 240 python3 "$root/scripts/gpu/bench_engine.py" "$pack/engine/gemma-engine" "$model" 0 "$runs" 400 128)

python3 - "$gpu_json" "$cpu_json" "$gpu" "$(( $(date +%s) - t0 ))" "${OUT:-}" <<'PY'
import json, sys
gpu, cpu, name, secs, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mib = lambda b: f"{b / 1048576:.0f} MiB" if b else "-"
print(f"\nGemma 3 270M Q4_K_M layout (weights filled in, not the real values) · {gpu['prompt_tokens']} prompt tokens · {gpu['completion_tokens']:.0f} generated · median of {gpu['runs']}")
print(f"{'':22}{'GPU':>14}{'CPU':>14}{'GPU/CPU':>10}")
rows = [("time to first token", "ttft_ms", "{:.1f} ms"), ("prefill tokens/s", "prefill_tokens_per_s", "{:.0f}"), ("decode tokens/s", "decode_tokens_per_s", "{:.1f}")]
for label, key, fmt in rows:
    ratio = (cpu[key] / gpu[key]) if key == "ttft_ms" else (gpu[key] / cpu[key])
    print(f"{label:22}{fmt.format(gpu[key]):>14}{fmt.format(cpu[key]):>14}{ratio:>9.1f}x")
print(f"{'peak RSS':22}{mib(gpu['peak_rss_bytes']):>14}{mib(cpu['peak_rss_bytes']):>14}")
print(f"{'peak GPU memory':22}{(str(gpu['peak_gpu_mib']) + ' MiB') if gpu['peak_gpu_mib'] else '-':>14}{'-':>14}")
print(f"{'layers on the GPU':22}{gpu['gpu_layers']:>14}{cpu['gpu_layers']:>14}")
print(f"GPU: {name} · devices used: {', '.join(gpu['devices'])} · whole check {secs} s")
if out:
    with open(f"{out}/gpu-check.json", "w") as f:
        json.dump({"gpu": name, "gpu_run": gpu, "cpu_run": cpu, "seconds": int(secs)}, f, indent=2)
if not gpu["gpu_layers"]:
    # Never let a CPU run pass for a GPU figure.
    sys.exit("error: the GPU run put no layer on the GPU (the CUDA module did not load or found no device: see the GPU probe above); these are not GPU figures")
PY
