#!/usr/bin/env bash
# The build for this CPU (what scripts/setup.sh writes to .cargo/cpu-features.toml after checking
# what runs) against ggml's portable x86-64 build (GEMMACTL_PORTABLE=1), same source, same model:
# prefill, decode and time to first token at a few prompt lengths, the two builds alternating
# within each round (scripts/lib/build_bench.py). The portable engine is built once into
# $CARGO_TARGET_DIR/portable (several minutes the first time: its own llama.cpp).
#
#   ./scripts/bench-build.sh                          # 4 rounds, prompts of 128, 512, 2,048 tokens
#   ./scripts/bench-build.sh --rounds 6 --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
./scripts/setup.sh >&2
target=${CARGO_TARGET_DIR:-target}
. scripts/lib/cpu-features.sh
say "building the portable gemma-engine into $target/portable (the first time compiles llama.cpp)"
(
  export_portable_cpu_features
  cargo build --locked -p gemma-engine --target-dir "$target/portable" >&2
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GEMMACTL_HOME=$work/home
"$target/debug/gemmactl" models pull gemma3-270m >&2
model=$("$target/debug/gemmactl" models show gemma3-270m --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
exec python3 scripts/lib/build_bench.py "$target/portable/debug/gemma-engine" "$target/debug/gemma-engine" \
  "$model" --labels portable,tuned "$@"
