#!/usr/bin/env bash
# The first of the README's two commands: installs what is missing, builds, downloads the default
# model (Gemma 3 270M, ~253 MB, once) and generates text through gemmactl.
#
#   ./scripts/demo.sh "The capital of France is"
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-The capital of France is}"

./scripts/setup.sh
# Where cargo put the binaries (CARGO_TARGET_DIR moves them, e.g. in scripts/fresh-check.sh).
gemmactl="${CARGO_TARGET_DIR:-target}/debug/gemmactl"
printf '\033[1m==> %s\033[0m\n' "downloading the default model (skipped when it is already there)" >&2
"$gemmactl" models pull gemma3-270m
printf '\033[1m==> %s\033[0m\n' "gemmactl run --model gemma3-270m --max-tokens 48 --stats \"$prompt\"" >&2
"$gemmactl" run --model gemma3-270m --max-tokens 48 --stats "$prompt"
