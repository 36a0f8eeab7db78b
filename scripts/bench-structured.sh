#!/usr/bin/env bash
# The cost of structured output: decode tokens/s of `gemmactl run` (greedy, default model) with
# no constraint, with a JSON Schema (nested object, enums, array), and with a grammar far from
# what the model would write unprompted (digits only). Each round runs the three back to back in
# an order rotated every round, so machine drift hits them alike; ratios are taken within a round
# against the free run, then the median.
#
#   ./scripts/bench-structured.sh              # 5 rounds
#   ./scripts/bench-structured.sh --rounds 9
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2 ;;
    *) echo "usage: $0 [--rounds R]" >&2; exit 2 ;;
  esac
  shift 2
done
./scripts/setup.sh >&2
bin=${CARGO_TARGET_DIR:-./target}/debug/gemmactl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GEMMACTL_HOME=$work/home GEMMACTL_ATTACH=0
$bin models pull gemma3-270m >&2

cat >"$work/pet.json" <<'EOF'
{"type": "object", "required": ["name", "kind", "age", "owner", "tags"], "additionalProperties": false,
 "properties": {
   "name": {"type": "string", "maxLength": 40}, "kind": {"enum": ["cat", "dog", "bird"]},
   "age": {"type": "integer", "minimum": 0, "maximum": 30},
   "owner": {"type": "object", "required": ["city", "verified"], "additionalProperties": false,
             "properties": {"city": {"type": "string", "maxLength": 40}, "verified": {"type": "boolean"}}},
   "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}}}
EOF
# 48 digits: complete within the 64-token budget (Gemma spells a number digit by digit).
printf 'root ::= [0-9]{48}\n' >"$work/digits.gbnf"

ways=(free schema digits)
declare -A args=(
  [free]=""
  [schema]="--json-schema $work/pet.json"
  [digits]="--grammar $work/digits.gbnf"
)
prompt="Describe a pet for an adoption listing, as JSON:"
results=$work/results.tsv
: >"$results"
for round in $(seq 1 "$rounds"); do
  for k in 0 1 2; do
    way=${ways[$(( (round + k) % 3 ))]}
    # shellcheck disable=SC2086
    json=$($bin run --no-log --json --temperature 0 --max-tokens 64 ${args[$way]} "$prompt")
    rate=$(printf '%s' "$json" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["timings"]["decode_tokens_per_s"], v["usage"]["completion_tokens"])')
    printf '%s\t%s\t%s\n' "$round" "$way" "$rate" >>"$results"
    printf 'round %s %-7s decode %s\n' "$round" "$way" "$rate" >&2
  done
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
by = {}
for r, way, rest in rows:
    rate, tokens = rest.split()
    by.setdefault(r, {})[way] = (float(rate), int(tokens))
print("| way | decode tok/s (median) | tokens (median) | × free (median of per-round ratios) |")
print("|---|---|---|---|")
for way in ["free", "schema", "digits"]:
    rates = [v[way][0] for v in by.values()]
    toks = [v[way][1] for v in by.values()]
    ratios = [v[way][0] / v["free"][0] for v in by.values()]
    print(f"| {way} | {statistics.median(rates):.1f} | {statistics.median(toks):.0f} | {statistics.median(ratios):.2f}× |")
EOF
