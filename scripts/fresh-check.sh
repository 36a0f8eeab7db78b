#!/usr/bin/env bash
# The README's two commands on a clean clone, as a new user runs them: clones the committed HEAD
# of this checkout into a temporary folder and runs, there,
#
#   ./scripts/demo.sh "The capital of France is"
#   ./scripts/test.sh
#
# with a private cargo target folder, gemmactl home, model download cache, pip cache and test-tool
# caches (the real gemma.cpp build among them), so nothing already built or downloaded on this
# machine helps. Reports the time and result of each.
# (The crate registry, ~/.cargo, is shared: crates are downloaded, not built, from there.)
#
#   ./scripts/fresh-check.sh                       # the honest cold run (~30-40 min on 2 cores)
#   ./scripts/fresh-check.sh --keep                # keep the clone, its target folder and caches
#   ./scripts/fresh-check.sh --warm-target DIR     # build in DIR (e.g. ./target): dependencies, llama.cpp
#                                                  #   included, are reused; DIR is updated in place
#   ./scripts/fresh-check.sh --warm-cache DIR      # take models from DIR (e.g. ~/.cache/gemmactl): no download
#   ./scripts/fresh-check.sh --load N              # run `stress-ng --cpu N` beside, as on a busy machine
#
# Logs are kept in a folder of their own, named at the end. Exits non-zero if either command failed.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; }

keep=0 warm_target="" warm_cache="" load=0
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --warm-target) warm_target=${2:?--warm-target needs a folder}; shift ;;
    --warm-cache) warm_cache=${2:?--warm-cache needs a folder}; shift ;;
    --load) load=${2:?--load needs a number of CPU workers}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown option $1: see ./scripts/fresh-check.sh --help" >&2; exit 2 ;;
  esac
  shift
done

source_repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$source_repo" rev-parse HEAD)
if [ -n "$(git -C "$source_repo" status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes in $source_repo are not part of this check (it clones $commit)" >&2
fi
for dir in "$warm_target" "$warm_cache"; do
  if [ -n "$dir" ] && [ ! -d "$dir" ]; then
    echo "error: $dir is not a folder: give an existing target or cache folder" >&2
    exit 2
  fi
done
if [ "$load" != 0 ] && ! command -v stress-ng >/dev/null 2>&1; then
  echo "error: --load needs stress-ng: install it with \`sudo apt-get install stress-ng\`" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gemmactl-fresh-check.XXXXXX")
logs=$(mktemp -d "${TMPDIR:-/tmp}/gemmactl-fresh-check-logs.XXXXXX")
stress=""
cleanup() {
  [ -n "$stress" ] && kill "$stress" 2>/dev/null
  if [ "$keep" = 1 ]; then
    echo "kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

git clone --quiet --no-checkout "$source_repo" "$work/gemmactl"
# The project's machines keep the shared tools beside the checkout (../shared: the real gemma.cpp
# build that test.sh runs its second pass against); the clone gets the same neighbour.
if [ -d "$source_repo/../shared" ]; then
  ln -s "$(cd "$source_repo/../shared" && pwd)" "$work/shared"
fi
git -C "$work/gemmactl" checkout --quiet --detach "$commit"
cd "$work/gemmactl"
demo_cmd='./scripts/demo.sh "The capital of France is"'
test_cmd='./scripts/test.sh'
for command in "$demo_cmd" "$test_cmd"; do
  if ! grep -qF -- "$command" README.md; then
    echo "error: README.md at $commit no longer shows \`$command\`: update scripts/fresh-check.sh to the README's commands" >&2
    exit 1
  fi
done

# Nothing of this machine's gemmactl settings leaks in; everything written goes under $work.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^GEMMACTL_' || true)
export CARGO_TARGET_DIR=${warm_target:+$(cd "$warm_target" && pwd)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$work/target}
export GEMMACTL_HOME=$work/home
export GEMMACTL_CACHE=${warm_cache:+$(cd "$warm_cache" && pwd)}
export GEMMACTL_CACHE=${GEMMACTL_CACHE:-$work/cache}
export PIP_CACHE_DIR=$work/pip-cache
# The test tools' caches (the real gemma.cpp build and its .sbs, the Python and npm clients) start
# empty too, as on a new machine.
export XDG_CACHE_HOME=$work/xdg-cache GEMMACTL_TEST_CACHE=$work/test-cache

echo "fresh check of $commit in $work" >&2
echo "  target $CARGO_TARGET_DIR${warm_target:+ (warm)} · cache $GEMMACTL_CACHE${warm_cache:+ (warm)}" >&2
if [ "$load" != 0 ]; then
  echo "  beside it: stress-ng --cpu $load" >&2
  stress-ng --cpu "$load" --quiet &
  stress=$!
fi

results=()
failed=0
run_step() {
  local name=$1 command=$2 log="$logs/$1.log" start status elapsed
  echo "==> $command (log: $log)" >&2
  start=$(date +%s)
  set +e
  bash -c "$command" >"$log" 2>&1
  status=$?
  set -e
  elapsed=$(($(date +%s) - start))
  local result="passed"
  [ $status -eq 0 ] || { result="FAILED (exit $status)"; failed=1; }
  local line
  line=$(printf '%-8s %-18s %3dm%02ds' "$name" "$result" $((elapsed / 60)) $((elapsed % 60)))
  if [ "$name" = test ]; then
    line="$line  $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n1 || true)"
    if grep -q 'against the real gemma.cpp' "$log"; then
      line="$line; the real gemma.cpp pass ran"
    else
      line="$line; no real gemma.cpp pass (no ../shared beside $source_repo)"
    fi
  fi
  results+=("$line")
  echo "    $line" >&2
}
run_step demo "$demo_cmd"
run_step test "$test_cmd"

echo
echo "fresh check of $commit"
printf '  %s\n' "${results[@]}"
echo "  logs: $logs"
exit $failed
