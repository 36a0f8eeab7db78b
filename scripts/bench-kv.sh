#!/usr/bin/env bash
# KV cache type and flash attention: memory, time to first token, prefill and decode of
# gemma-engine on the default model at prompt lengths 128, 512, 2,048 and 8,192 tokens, for
# f16 without and with flash attention, q8_0 and q4_0 (which need it). One engine per setting and
# round, settings in an order rotated every round; ratios within a round against f16 without
# flash attention. The figures and the defaults chosen from them: docs/tuning.md.
#
#   ./scripts/bench-kv.sh                          # 3 rounds
#   ./scripts/bench-kv.sh --rounds 2 --lengths 128,2048 --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >&2
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GEMMACTL_HOME=$work/home
"$target/debug/gemmactl" models pull gemma3-270m >&2
model=$("$target/debug/gemmactl" models show gemma3-270m --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
exec python3 scripts/lib/kv_bench.py "$target/debug/gemma-engine" "$model" "$@"
