#!/usr/bin/env python3
"""Two gemma-engine builds of one source, measured side by side on the engine protocol.

For each build and prompt length, one greedy request: time to first token, prefill and decode
tokens/s as the engine reports them in `done`. One engine per build and round, after one warm-up
request; the two builds alternate which goes first each round, and ratios (B / A) are taken within
a round, then the median (and range) over rounds, so the machine's load drifts out of them.
Standard library only; the engine driver is kv_bench.py's.

    build_bench.py ENGINE_A ENGINE_B MODEL [--labels portable,tuned] [--rounds 4]
                   [--lengths 128,512,2048] [--tokens 64] [--threads N]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kv_bench import Engine, text  # noqa: E402


def built_for(engine):
    out = subprocess.run([engine, "--probe"], capture_output=True, text=True, timeout=120)
    for line in out.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "probe":
            return event.get("cpu_features") or ["(not reported)"]
    raise SystemExit(f"error: {engine} --probe printed no probe event: {out.stderr.strip()}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("engine_a")
    p.add_argument("engine_b")
    p.add_argument("model")
    p.add_argument("--labels", default="A,B")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--lengths", default="128,512,2048")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    labels = a.labels.split(",")
    engines = [a.engine_a, a.engine_b]
    lengths = [int(x) for x in a.lengths.split(",")]
    context = max(1024, int(max(lengths) * 1.15) + a.tokens + 64)

    e = Engine(engines[0], a.model, context, a.threads, "f16", "auto")
    per = e.generate("calibrate", text(40), 1)["usage"]["prompt_tokens"] / 40
    e.close()
    prompts = {n: text(max(1, round(n / per))) for n in lengths}

    rows = {}  # (build index, length) -> list of per-round dicts
    for r in range(a.rounds):
        for b in ([0, 1] if r % 2 == 0 else [1, 0]):
            e = Engine(engines[b], a.model, context, a.threads, "f16", "auto")
            e.generate(f"warm-{r}", prompts[lengths[0]], 4)
            for n in lengths:
                d = e.generate(f"{r}-{n}", prompts[n], a.tokens)
                t = d["timings"]
                rows.setdefault((b, n), []).append(
                    {"round": r, "prompt_tokens": d["usage"]["prompt_tokens"], "ttft_ms": t["ttft_ms"],
                     "prefill": t["prefill_tokens_per_s"], "decode": t["decode_tokens_per_s"]})
            e.close()
            print(f"round {r + 1}/{a.rounds}: {labels[b]} done", file=sys.stderr)

    def ratios(n, key):
        mine = {x["round"]: x[key] for x in rows[(1, n)]}
        theirs = {x["round"]: x[key] for x in rows[(0, n)]}
        return [mine[r] / theirs[r] for r in mine if theirs.get(r)]

    med = statistics.median
    print(f"gemma-engine, context {context}, 1 slot, {a.threads} threads, {a.tokens} generated tokens, "
          f"{a.rounds} rounds, builds alternating; medians, and {labels[1]} / {labels[0]} as the median "
          f"(range) of per-round ratios")
    for b in (0, 1):
        print(f"- {labels[b]}: {engines[b]} built for {' '.join(built_for(engines[b]))}")
    print()
    print(f"| prompt tokens | {labels[0]} prefill tok/s | {labels[1]} prefill tok/s | prefill ratio "
          f"| {labels[0]} decode tok/s | {labels[1]} decode tok/s | decode ratio | time to first token ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n in lengths:
        cells = [f"{med([x['prompt_tokens'] for x in rows[(0, n)]]):.0f}"]
        for key, fmt in (("prefill", "{:.0f}"), ("decode", "{:.1f}")):
            cells += [fmt.format(med([x[key] for x in rows[(b, n)]])) for b in (0, 1)]
            rs = ratios(n, key)
            cells.append(f"**{med(rs):.2f}×** ({min(rs):.2f}–{max(rs):.2f})")
        rs = ratios(n, "ttft_ms")
        cells.append(f"{med(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
