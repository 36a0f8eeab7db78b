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
./scripts/lib/openai-venv.sh >/dev/null
printf '\033[1m==> %s\033[0m\n' "downloading the default model for the tests (skipped when it is already there)" >&2
./target/debug/gemmactl models pull gemma3-270m

printf '\033[1m==> %s\033[0m\n' "running the tests" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One test at a time: each end-to-end test runs an engine that uses every core, and two engines
# fighting over two cores make every wait slow.
set +e
cargo test --workspace --locked "$@" -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
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
