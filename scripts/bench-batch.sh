#!/usr/bin/env bash
# The batch benchmark: 64 prompts of 64 generated tokens each (greedy, default model), answered
# by `gemmactl batch` at --parallel 1, 4, 8 and 16, and by a shell loop of 64 `gemmactl run`
# processes (how people script a local model one request at a time). Each round runs the five
# ways back to back, in an order rotated every round, so machine drift hits them alike; ratios are
# taken within a round against --parallel 1 of the same round, then the median over rounds.
#
#   ./scripts/bench-batch.sh                       # 3 rounds, 64 prompts x 64 tokens
#   ./scripts/bench-batch.sh --rounds 2 --threads 1  # engine threads for every way (default: all cores)
#   ./scripts/bench-batch.sh --prompts 32 --tokens 32
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 count=64 tokens=64 threads=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2 ;;
    --prompts) count=$2 ;;
    --tokens) tokens=$2 ;;
    --threads) threads=(--threads "$2") ;;
    *) echo "usage: $0 [--rounds R] [--prompts N] [--tokens T] [--threads N]" >&2; exit 2 ;;
  esac
  shift 2
done
./scripts/setup.sh >&2
bin=./target/debug/gemmactl
$bin models pull gemma3-270m >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A throw-away home: the history is on (the default) for both batch and run, as users have it.
export GEMMACTL_HOME=$work/home
unset GEMMACTL_PARALLEL GEMMACTL_CONTEXT GEMMACTL_MODEL
$bin models pull gemma3-270m >/dev/null 2>&1

topics=(rivers mountains bread clocks bridges bees glass salt trains maps copper tides owls paper
  lanterns ferns kites wool stone ink cellos harbors moss orchards lighthouses deserts comets
  violins looms canals glaciers pottery markets foxes meadows ships bells gardens storms wells
  islands maple caves pianos frost barns lakes ravens silk forges dunes ponds quarries beacons
  mills cedars reefs sparrows orbits valleys chalk tunnels rain clay amber)
prompts=$work/prompts.txt
: >"$prompts"
for i in $(seq 0 $((count - 1))); do
  echo "A short essay about ${topics[$((i % ${#topics[@]}))]}, part $((i / ${#topics[@]} + 1)). Chapter one:" >>"$prompts"
done
python3 - "$prompts" "$work/in.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for i, line in enumerate(f):
        out.write(json.dumps({"id": f"p{i:02}", "prompt": line.rstrip("\n")}) + "\n")
PY

now() { date +%s.%N; }
# Each way prints "<generated tokens> <seconds>".
way_batch() {
  local n=$1 out=$work/out-$1.jsonl start end
  rm -f "$out"
  start=$(now)
  $bin batch "$work/in.jsonl" -o "$out" --parallel "$n" --max-tokens "$tokens" --temperature 0 "${threads[@]}" 2>/dev/null
  end=$(now)
  python3 -c 'import json,sys; print(sum(json.loads(l)["usage"]["completion_tokens"] for l in open(sys.argv[1])), float(sys.argv[3]) - float(sys.argv[2]))' "$out" "$start" "$end"
}
way_loop() {
  local out=$work/out-loop.jsonl start end
  : >"$out"
  start=$(now)
  while IFS= read -r p; do
    $bin run --max-tokens "$tokens" --temperature 0 --json "${threads[@]}" "$p" >>"$out" 2>/dev/null
  done <"$prompts"
  end=$(now)
  python3 -c 'import json,sys; print(sum(json.loads(l)["usage"]["completion_tokens"] for l in open(sys.argv[1])), float(sys.argv[3]) - float(sys.argv[2]))' "$out" "$start" "$end"
}

ways=(p1 p4 p8 p16 loop)
results=$work/results.txt
: >"$results"
for r in $(seq 1 "$rounds"); do
  for k in 0 1 2 3 4; do
    way=${ways[$(((k + r - 1) % 5))]}
    case $way in
      loop) figures=$(way_loop) ;;
      p*) figures=$(way_batch "${way#p}") ;;
    esac
    echo "round $r $way $figures" | tee -a "$results" >&2
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for _, r, way, tokens, secs in rows:
    by.setdefault(int(r), {})[way] = (int(tokens), float(secs))
ways = ["p1", "p4", "p8", "p16", "loop"]
names = {"p1": "batch --parallel 1", "p4": "batch --parallel 4", "p8": "batch --parallel 8",
         "p16": "batch --parallel 16", "loop": "shell loop of gemmactl run"}
tps = {w: [by[r][w][0] / by[r][w][1] for r in sorted(by)] for w in ways}
secs = {w: [by[r][w][1] for r in sorted(by)] for w in ways}
vs1 = {w: [by[r][w][0] / by[r][w][1] / (by[r]["p1"][0] / by[r]["p1"][1]) for r in sorted(by)] for w in ways}
vsloop = {w: [by[r][w][0] / by[r][w][1] / (by[r]["loop"][0] / by[r]["loop"][1]) for r in sorted(by)] for w in ways}
print(f"| median of {len(by)} rounds | wall time | generated tokens/s | × --parallel 1 | × shell loop |")
print("|---|---|---|---|---|")
for w in ways:
    print(f"| {names[w]} | {statistics.median(secs[w]):.1f} s | {statistics.median(tps[w]):.1f} | "
          f"{statistics.median(vs1[w]):.2f}× | {statistics.median(vsloop[w]):.2f}× |")
PY
