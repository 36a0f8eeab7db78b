#!/usr/bin/env python3
"""The settings issue 19 asked to try for batched work, measured with llama.cpp's own tools on
gemma-engine's model and CPU options: micro-batch size (n_ubatch) for prefill, and threads for
batches (n_threads_batch) against threads for single-token decode (n_threads), at 1 and 16
sequences decoded together.

Every setting runs once per round, in an order that reverses each round, and each is reported as
the median over rounds of its ratio to gemma-engine's setting (n_ubatch 512, 2 threads for both)
in the same round, so the shared machine's drift falls on all alike.

  python3 scripts/lib/batch_tries.py LLAMA_BENCH_DIR MODEL.gguf [--rounds 3]

LLAMA_BENCH_DIR is the folder scripts/lib/llama-bench.sh built (its bin/ holds llama-bench and
llama-batched-bench; build the latter there with `cmake --build DIR --target llama-batched-bench`).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

TIMEOUT_S = 900


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:1])} failed: {out.stderr[-400:]}")
    return out.stdout


def prefill(bin_dir, model, tokens, ubatch):
    out = run([f"{bin_dir}/llama-bench", "-m", model, "-p", str(tokens), "-n", "0", "-r", "2",
               "-t", "2", "-b", "512", "-ub", str(ubatch), "-fa", "1", "-o", "json"])
    return json.loads(out)[0]["avg_ts"]


def batched(bin_dir, model, sequences, threads, threads_batch):
    """Aggregate decode tokens/s of `sequences` replies of 32 tokens after 48-token prompts."""
    out = run([f"{bin_dir}/llama-batched-bench", "-m", model, "-c", "4096", "-b", "512",
               "-ub", "512", "-npp", "48", "-ntg", "32", "-npl", str(sequences), "-t", str(threads),
               "-tb", str(threads_batch), "-fa", "on"])
    # The table row: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[2] == str(sequences) and re.match(r"^\d+$", cells[0]):
            return float(cells[7])
    sys.exit(f"error: no result row in llama-batched-bench's output:\n{out[-800:]}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin_dir")
    p.add_argument("model")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    bin_dir = os.path.join(a.bin_dir, "bin")
    tries = []
    for tokens in (512, 2048):
        for ub in (512, 128, 256):
            tries.append((f"prefill {tokens} tokens, n_ubatch {ub}", f"prefill{tokens}",
                          lambda t=tokens, u=ub: prefill(bin_dir, a.model, t, u)))
    for seqs in (1, 16):
        for t, tb in ((2, 2), (1, 2), (2, 1), (1, 1)):
            tries.append((f"decode {seqs} sequences, n_threads {t}, n_threads_batch {tb}",
                          f"decode{seqs}", lambda s=seqs, t=t, tb=tb: batched(bin_dir, a.model, s, t, tb)))
    values = {name: [] for name, _, _ in tries}
    for r in range(a.rounds):
        order = tries if r % 2 == 0 else list(reversed(tries))
        for name, _, f in order:
            values[name].append(f())
            print(f"round {r + 1}  {name}: {values[name][-1]:.1f} tok/s", flush=True)
    baseline = {}
    for name, group, _ in tries:
        baseline.setdefault(group, name)  # the first of each group is gemma-engine's setting
    print("\nmedian tok/s, and the median of per-round ratios to gemma-engine's setting:")
    for name, group, _ in tries:
        base = values[baseline[group]]
        ratios = [v / b for v, b in zip(values[name], base)]
        print(f"  {name:<55} {statistics.median(values[name]):8.1f}  {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
