#!/usr/bin/env bash
# Line coverage of the workspace's Rust code over the whole test suite (scripts/test.sh), measured
# with cargo-llvm-cov, which it installs when missing (the `llvm-tools` rustup component and the
# `cargo-llvm-cov` cargo subcommand). Prints the figure per module and for the whole; writes the
# per-file JSON summary and an HTML report under the coverage target folder.
#
#   ./scripts/coverage.sh                 # the whole suite, then the report
#   ./scripts/coverage.sh --test run_cli  # extra arguments go to scripts/test.sh (and so to cargo test)
#   ./scripts/coverage.sh --report-only   # the report again from the profiles of the last run
#
# How child processes are counted: the end-to-end tests run the `gemmactl` and `gemma-engine`
# binaries as children. The instrumented build of those binaries writes one profile per process
# (LLVM_PROFILE_FILE names it by pid), and the report reads them all with the test binaries'
# own, so code only reached through a binary (e.g. src/commands/run.rs) counts. A process killed
# with SIGKILL writes no profile: what it ran before is not counted.
#
# What the figure excludes: test code itself — tests/ (the end-to-end tests, their harness and the
# gemma.cpp stand-in program) and the unit-test files src/*/tests.rs — since counting the tests
# as covered code would only inflate it. Unit tests inside a module (#[cfg(test)] mod tests) cannot
# be told apart by file and are counted with their module. Nothing else is left out.
#
# The instrumented build goes into its own target folder (<target>/llvm-cov-target), so the plain
# build scripts/test.sh uses is never replaced by an instrumented one; its first build compiles
# llama.cpp once more (several minutes). The run takes longer than scripts/test.sh: instrumented
# binaries are slower, and every process writes a profile.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v rustup >/dev/null 2>&1; then
  echo "error: coverage needs rustup (for the llvm-tools component): install it from the Rust website's instructions, then run this again" >&2
  exit 1
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  say "installing the llvm-tools rustup component (llvm-profdata and llvm-cov)"
  rustup component add llvm-tools
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
  say "installing cargo-llvm-cov"
  cargo install cargo-llvm-cov --locked
fi

report_only=0
if [ "${1:-}" = --report-only ]; then
  report_only=1
  shift
fi

base="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$base/llvm-cov-target"
mkdir -p "$CARGO_TARGET_DIR"
# The wrapper cargo-llvm-cov sets instruments the workspace's crates only (dependencies and
# llama.cpp are built as usual); every process of an instrumented binary writes its profile here.
eval "$(cargo llvm-cov show-env --sh 2>/dev/null)"
ignore='(^|/)tests(/|\.rs$)'
summary="$CARGO_TARGET_DIR/coverage-summary.json"

status=0
if [ "$report_only" -eq 0 ]; then
  say "removing the profiles and instrumented workspace builds of the last coverage run"
  cargo llvm-cov clean --workspace
  rm -f default_*.profraw
  say "running the test suite on instrumented binaries (scripts/test.sh)"
  set +e
  ./scripts/test.sh "$@"
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "warning: the test suite failed (exit $status): the coverage below counts the tests that ran" >&2
  fi
fi

# MCP clients start `gemmactl mcp` with an environment of their own (the MCP Inspector and Claude
# Code pass on only a few variables), so LLVM_PROFILE_FILE does not reach it: such a process
# writes LLVM's default name in its working folder, the repository root here. Counted with the rest.
find . -maxdepth 1 -name 'default_*.profraw' -exec mv -t "$CARGO_TARGET_DIR" {} +
say "merging the profiles and writing the report"
cargo llvm-cov report --workspace --ignore-filename-regex "$ignore" --json --summary-only --output-path "$summary"
cargo llvm-cov report --workspace --ignore-filename-regex "$ignore" --html --output-dir "$CARGO_TARGET_DIR/coverage" >/dev/null

# Per module: src/<folder> (or a top-level src/<file>.rs), each crate under crates/, the engine,
# and the whole, as covered lines / lines.
jq -r --arg root "$PWD/" '
  def percent: if .count > 0 then (1000 * .covered / .count | round) / 10 else 100 end;
  [.data[0].files[]
    | (.filename | ltrimstr($root)) as $f
    | { module: ($f
          | if test("^src/[^/]+/") then capture("^(?<m>src/[^/]+)/").m
            elif test("^crates/[^/]+/") then capture("^(?<m>crates/[^/]+)/").m
            elif test("^engine/") then "engine"
            else . end),
        covered: .summary.lines.covered, count: .summary.lines.count } ] as $rows
  | ($rows | group_by(.module)
     | map({ module: .[0].module, covered: (map(.covered) | add), count: (map(.count) | add) })
     | sort_by(.covered / ([.count, 1] | max))
     | .[] | "\(.module)\t\(.covered)\t\(.count)\t\(percent) %"),
    ({ covered: ($rows | map(.covered) | add), count: ($rows | map(.count) | add) }
     | "total\t\(.covered)\t\(.count)\t\(percent) %")
' "$summary" | column -t -s $'\t' -N "module,covered lines,lines,line coverage" -R 2,3,4

echo "per-file figures: $summary; browsable report: $CARGO_TARGET_DIR/coverage/html/index.html" >&2
exit "$status"
