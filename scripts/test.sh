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

./scripts/setup.sh
printf '\033[1m==> %s\033[0m\n' "downloading the default model for the tests (skipped when it is already there)" >&2
model=$(./target/debug/gemmactl models pull gemma3-270m | sed -n 's/^gemma3-270m: //p')

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

printf '\033[1m==> %s\033[0m\n' "running the tests" >&2
# One test at a time: each end-to-end test runs an engine that uses every core, and two engines
# fighting over two cores make every wait slow. The gemma.cpp tests use their stand-in here.
set +e
env -u GEMMA_BIN -u GEMMA_WEIGHTS cargo test --workspace --locked "$@" -- --test-threads=1 2>&1 | tee "$log"
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
  cargo test --locked --test gemma_cpp -- --test-threads=1 2>&1 | tee -a "$log"
  real_status=${PIPESTATUS[0]}
  set -e
  if [ "$real_status" -ne 0 ]; then
    status=$real_status
  fi
fi

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | grep -Eo '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ "$passed" -eq 0 ]; then
  echo "error: no test ran (check the filter given to scripts/test.sh)" >&2
  exit 1
fi
