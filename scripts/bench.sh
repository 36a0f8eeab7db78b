#!/usr/bin/env bash
# Builds (same profile as the demo and the tests, so llama.cpp is compiled once) and runs the
# benchmark on the default model. Extra arguments go to `gemmactl bench`.
#
#   ./scripts/bench.sh --runs 7
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Where cargo put the binaries (CARGO_TARGET_DIR moves them, e.g. in scripts/fresh-check.sh).
gemmactl="${CARGO_TARGET_DIR:-target}/debug/gemmactl"
"$gemmactl" models pull gemma3-270m
exec "$gemmactl" bench --model gemma3-270m "$@"
