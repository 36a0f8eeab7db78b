#!/usr/bin/env bash
# Structural benchmark of images in gemma-engine: time to first token of one prompt with one
# image against the same prompt without it, on the default model and the random-weight test
# projector (scripts/lib/make-test-projector.py: Gemma 3 structure, 64-pixel images, 18 tokens
# per image). It measures the plumbing's cost (decode, resize, encode, the image tokens'
# prefill), not a real Gemma 3 encoder's, whose weights cannot be had here. Rounds interleave the
# two requests (order alternating) on one engine; the ratio is the median of per-round ratios.
#
#   ./scripts/bench-vision.sh                # 15 rounds
#   ./scripts/bench-vision.sh --rounds 30
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >&2
target=${CARGO_TARGET_DIR:-target}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/gemmactl-test"
venv="$cache/venv"
if ! "$venv/bin/python3" -c 'import gguf, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q gguf numpy >&2
fi
mkdir -p "$cache/projectors"
projector="$cache/projectors/bench-mmproj-640.gguf"
"$venv/bin/python3" scripts/lib/make-test-projector.py "$projector" --embedding 640
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GEMMACTL_HOME=$work/home
"$target/debug/gemmactl" models pull gemma3-270m >&2
model=$("$target/debug/gemmactl" models show gemma3-270m --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
exec python3 scripts/lib/vision_bench.py "$target/debug/gemma-engine" "$model" "$projector" "$@"
