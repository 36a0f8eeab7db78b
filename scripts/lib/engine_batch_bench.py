"""Aggregate decode throughput of gemma-engine itself at several concurrency levels, for A/B
tests of engine builds and settings (docs/benchmarks.md, "Concurrency").

Usage:
  engine_batch_bench.py --model GGUF --rounds 4 --levels 1,16 --max-tokens 64 \
      --variant 'base=target/debug/gemma-engine' \
      --variant 'tb1=target/debug/gemma-engine --threads-batch 1'

Each variant is a command line (binary and extra flags; `ENV=value` words before the binary are
set in its environment). Every round starts each variant's engine once (`--parallel 16`, 2
threads unless a variant says otherwise), in alternating order, and runs every level on it, also
alternating; a level sends N greedy requests with different prompts at once over the engine
protocol and counts generated tokens over the wall time from the first request sent to the last
`done` (prefill included, as `gemmactl bench --suite supervisor` does). It prints every sample,
then per variant the median of N ÷ 1 paired within each round, and per level the median of each
variant ÷ the first paired within each round. Standard library only.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def start(command, model, parallel, context):
    words = shlex.split(command)
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    argv = words + ["--model", model, "--parallel", str(parallel), "--context", str(context)]
    if "--threads" not in words:
        argv += ["--threads", "2"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "ready":
            return proc
        if event.get("event") not in ("loading",):
            raise SystemExit(f"{command}: engine failed to start: {line.strip()}")
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"{command}: engine gave no ready event")


def level(proc, n, max_tokens, tag):
    started = time.monotonic()
    for i in range(n):
        request = {"op": "generate", "id": f"{tag}-{i}", "prompt": {"format": "completion"},
                   "messages": [{"role": "user", "content":
                                 f"Story number {i + 1}: once upon a time, in a village by the sea,"}],
                   "params": {"max_tokens": max_tokens, "temperature": 0}}
        proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    done, tokens = 0, 0
    deadline = started + 600
    while done < n:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("engine ended during a level")
        event = json.loads(line)
        kind = event.get("event")
        if kind == "done":
            done += 1
            tokens += event["usage"]["completion_tokens"]
        elif kind == "error":
            raise SystemExit(f"engine error: {line.strip()}")
        if time.monotonic() > deadline:
            raise SystemExit("a level took more than 600 s")
    return tokens / (time.monotonic() - started)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--levels", default="1,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--variant", action="append", required=True)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    names = [v.split("=", 1)[0] for v in args.variant]
    commands = [v.split("=", 1)[1] for v in args.variant]
    # samples[variant][level] = one value per round
    samples = {n: {lv: [] for lv in levels} for n in names}
    for r in range(args.rounds):
        order = list(range(len(names))) if r % 2 == 0 else list(reversed(range(len(names))))
        for vi in order:
            proc = start(commands[vi], args.model, max(levels), args.context)
            lorder = levels if (r + vi) % 2 == 0 else list(reversed(levels))
            for lv in lorder:
                t = level(proc, lv, args.max_tokens, f"r{r}l{lv}")
                samples[names[vi]][lv].append(t)
                print(f"round {r + 1} {names[vi]:<10} {lv:>2} concurrent {t:7.1f} tok/s",
                      file=sys.stderr, flush=True)
            proc.stdin.close()
            proc.wait(timeout=30)
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f}")
    for n in names:
        row = "  ".join(f"{lv}: {statistics.median(samples[n][lv]):6.1f}" for lv in levels)
        print(f"{n:<10} median tok/s  {row}")
        for lv in levels[1:]:
            ratios = [a / b for a, b in zip(samples[n][lv], samples[n][levels[0]])]
            print(f"{n:<10} {lv} ÷ {levels[0]} paired: median {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    for n in names[1:]:
        for lv in levels:
            ratios = [a / b for a, b in zip(samples[n][lv], samples[names[0]][lv])]
            print(f"{n} ÷ {names[0]} at {lv}: median {statistics.median(ratios):.3f}x "
                  f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
