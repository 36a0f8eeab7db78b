#!/usr/bin/env bash
# The second of the README's two commands: installs what is missing, builds, downloads the
# default model into the shared cache, and runs the whole test suite (unit tests and end-to-end
# tests on the real engine and the real model). Then it runs tests/gemma_cpp.rs again against
# Google's real gemma.cpp binary and a real .sbs converted from the default model, both built by
# the project's shared tool (../shared/tools/gemma-cpp, cached between runs).
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh run_cli    # extra arguments go to `cargo test` (here: one test file's tests);
#                                # the real gemma.cpp pass runs when no argument is given or one
#                                # mentions gemma (./scripts/test.sh gemma)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --tests
# Where cargo put the binaries (CARGO_TARGET_DIR moves them, e.g. in scripts/fresh-check.sh).
gemmactl="${CARGO_TARGET_DIR:-target}/debug/gemmactl"
./scripts/lib/openai-venv.sh >/dev/null
printf '\033[1m==> %s\033[0m\n' "downloading the default model for the tests (skipped when it is already there)" >&2
model=$("$gemmactl" models pull gemma3-270m | sed -n 's/^gemma3-270m: //p')
./scripts/lib/mcp-clients.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

printf '\033[1m==> %s\033[0m\n' "running the tests" >&2
# One test at a time: each end-to-end test runs an engine that uses every idle core, and two
# engines sharing two cores make every wait slow. --no-fail-fast: a failing test binary does not
# stop the ones after it, so every test runs and is counted.
set +e
# The gemma.cpp tests use their stand-in in this pass; the real binary gets its own pass below.
env -u GEMMA_BIN -u GEMMA_WEIGHTS cargo test --workspace --locked --no-fail-fast --features gemmactl/test-support "$@" -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

real_pass=0
if [ $# -eq 0 ]; then
  real_pass=1
else
  for arg in "$@"; do
    case "$arg" in *gemma*) real_pass=1 ;; esac
  done
fi
tool=../shared/tools/gemma-cpp/build.sh
if [ "$real_pass" -eq 1 ] && [ ! -f "$tool" ]; then
  echo "note: $tool is not here, so tests/gemma_cpp.rs ran against its stand-in only" >&2
  real_pass=0
fi
if [ "$real_pass" -eq 1 ]; then
  printf '\033[1m==> %s\033[0m\n' "building the real gemma.cpp and converting the default model with $tool (cached after the first run)" >&2
  # The converter's Python packages go into a virtual environment in the cache, never the system's.
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/gemmactl-test/venv"
  if ! "$venv/bin/python3" -c 'import gguf, numpy, sentencepiece, google.protobuf' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python3" -m pip install -q gguf numpy sentencepiece protobuf >&2
  fi
  eval "$(PATH="$venv/bin:$PATH" bash "$tool" --sbs "$model")"
  export GEMMA_BIN GEMMA_WEIGHTS
  printf '\033[1m==> %s\033[0m\n' "running tests/gemma_cpp.rs against the real gemma.cpp ($GEMMA_BIN, $GEMMA_WEIGHTS)" >&2
  set +e
  cargo test --workspace --locked --no-fail-fast --features gemmactl/test-support --test gemma_cpp -- --test-threads=1 2>&1 | tee -a "$log"
  real_status=${PIPESTATUS[0]}
  set -e
  if [ "$real_status" -ne 0 ]; then
    status=$real_status
  fi
fi

# Every binary (unit, integration and doc tests) ends with one "test result:" line.
count() { grep -E '^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(count passed)
failed=$(count failed)
ignored=$(count ignored)
binaries=$(grep -cE '^test result:' "$log" || true)
echo "$passed passed, $failed failed, $ignored ignored ($binaries test binaries)"
if [ "$failed" -gt 0 ]; then
  echo "failed:" >&2
  sed -n 's/^test \(.*\) \.\.\. FAILED$/  \1/p' "$log" >&2
fi
if [ "$status" -ne 0 ]; then
  if [ "$failed" -eq 0 ]; then
    echo "error: cargo test failed before or outside the tests (a build error, or a test binary that crashed): see above" >&2
  fi
  exit "$status"
fi
if [ "$passed" -eq 0 ]; then
  echo "error: no test ran (check the filter given to scripts/test.sh)" >&2
  exit 1
fi
