#!/usr/bin/env bash
# The second of the README's two commands: installs what is missing, builds, downloads the
# default model into the shared cache, and runs the whole test suite (unit tests and end-to-end
# tests on the real engine and the real model).
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh run_cli    # extra arguments go to `cargo test` (here: one test file's tests)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
# Where cargo put the binaries (CARGO_TARGET_DIR moves them, e.g. in scripts/fresh-check.sh).
gemmactl="${CARGO_TARGET_DIR:-target}/debug/gemmactl"
printf '\033[1m==> %s\033[0m\n' "downloading the default model for the tests (skipped when it is already there)" >&2
"$gemmactl" models pull gemma3-270m

printf '\033[1m==> %s\033[0m\n' "running the tests" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One test at a time: each end-to-end test runs an engine that uses every core, and two engines
# fighting over two cores make every wait slow. --no-fail-fast: a failing test binary does not
# stop the ones after it, so every test runs and is counted.
set +e
cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
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
