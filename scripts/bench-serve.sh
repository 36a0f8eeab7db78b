#!/usr/bin/env bash
# `gemmactl serve` benchmarks (docs/benchmarks.md):
#  1. 20 sequential `gemmactl run` calls attached to a warm server ÷ the same 20 standalone
#     (--local), interleaved round by round;
#  2. aggregate decode tokens/s of 1, 8 and 32 concurrent HTTP clients (streaming chat).
#
#   ./scripts/bench-serve.sh [ROUNDS] [RUNS] [CLIENTS...]   # default 3 rounds of 20 runs; 1 8 32 clients
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
runs=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
clients=("${@:-1 8 32}")
bin=./target/debug/gemmactl
home=$(mktemp -d)
export GEMMACTL_HOME=$home
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$home"' EXIT
$bin models pull gemma3-270m >/dev/null
$bin serve --addr 127.0.0.1:0 2>"$home/serve.log" &
server=$!
for _ in $(seq 600); do
  url=$(sed -n 's/^gemmactl serve listening on \(http[^ ]*\).*/\1/p' "$home/serve.log")
  [ -n "$url" ] && curl -sf "$url/health" >/dev/null && break
  sleep 0.2
done
echo "server at $url"
now() { date +%s.%N; }
sequential() {  # $1: extra flag
  local t0 t1
  t0=$(now)
  for i in $(seq "$runs"); do
    $bin run $1 --no-log --max-tokens 8 --temperature 0 "Question $i: the capital of France is" >/dev/null
  done
  t1=$(now)
  python3 -c "print($t1 - $t0)"
}
echo "$runs sequential runs per way"
echo "round  standalone_s  attached_s  ratio"
for r in $(seq "$rounds"); do
  # Alternate which goes first, so drift in the machine's speed does not favour one.
  if [ $((r % 2)) -eq 1 ]; then a=$(sequential --local); b=$(sequential ""); else b=$(sequential ""); a=$(sequential --local); fi
  printf '%5d  %12.2f  %10.2f  %5.3f\n' "$r" "$a" "$b" "$(python3 -c "print($b / $a)")"
done
python3 scripts/lib/concurrency.py "$url/v1" ${clients[*]}
