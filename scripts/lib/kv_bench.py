#!/usr/bin/env python3
"""KV cache type and flash attention, measured on gemma-engine directly (its own protocol).

For every setting (KV cache type x flash attention) and every prompt length, one greedy request:
time to first token, prefill and decode tokens/s as the engine reports them in `done`. Per
setting, one engine per round: its anonymous resident memory after `ready` (RssAnon: the KV cache
and compute buffers, not the mapped weights) and its peak resident memory at the end (VmHWM).
Settings run in an order rotated every round; ratios are taken within a round against the first
setting, then the median over rounds. Standard library only.

    kv_bench.py ENGINE MODEL [--rounds 3] [--lengths 128,512,2048,8192] [--tokens 32] [--threads N]
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

SETTINGS = [("f16", "off"), ("f16", "on"), ("q8_0", "on"), ("q4_0", "on")]
WAIT_S = 600

ANIMALS = "fox owl heron badger otter lynx crane beaver marten stoat hare wren".split()
PLACES = "harbor mill orchard quarry valley meadow bridge market tower forest".split()
COLOURS = "red grey amber green silver brown white black golden blue".split()


def sentence(i):
    return (f"Entry {i}: the {COLOURS[i % 10]} {ANIMALS[i % 12]} walked {i % 37 + 2} miles "
            f"to the {PLACES[(i * 7) % 10]} before dawn.")


def text(sentences):
    return " ".join(sentence(i) for i in range(sentences))


class Engine:
    def __init__(self, engine, model, context, threads, kv, flash):
        args = [engine, "--model", model, "--context", str(context), "--parallel", "1",
                "--threads", str(threads), "--kv-cache-type", kv, "--flash-attention", flash]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self.read_lines, daemon=True).start()
        self.ready = self.until(lambda e: e.get("event") != "loading")
        if self.ready.get("event") != "ready":
            raise SystemExit(f"error: gemma-engine did not load with {kv}/{flash}: {self.ready}")

    def until(self, done):
        # Lines are read on a thread so a silent engine cannot hold the script past WAIT_S.
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise SystemExit(f"error: gemma-engine sent nothing for {WAIT_S} s")
            if line is None:
                raise SystemExit("error: gemma-engine ended early")
            event = json.loads(line)
            if done(event):
                return event

    def read_lines(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def generate(self, rid, prompt, tokens):
        command = {"op": "generate", "id": rid, "prompt": {"format": "completion"},
                   "messages": [{"role": "user", "content": prompt}],
                   "params": {"max_tokens": tokens, "temperature": 0}}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        done = self.until(lambda e: e.get("id") == rid and e.get("event") in ("done", "error"))
        if done["event"] != "done":
            raise SystemExit(f"error: request failed: {done}")
        return done

    def status_kib(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("engine")
    p.add_argument("model")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lengths", default="128,512,2048,8192")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    lengths = [int(x) for x in a.lengths.split(",")]
    # Calibrate sentences → tokens once (the text's numbers grow, so long prompts come out a few
    # per cent longer than asked); the context leaves room for that drift.
    # (at least 1,024: the calibration text itself is ~750 tokens).
    context = max(1024, int(max(lengths) * 1.15) + a.tokens + 64)
    e = Engine(a.engine, a.model, context, a.threads, "f16", "auto")
    per = e.generate("calibrate", text(40), 1)["usage"]["prompt_tokens"] / 40
    e.close()
    prompts = {n: text(max(1, round(n / per))) for n in lengths}

    rows = {}  # (kv, flash, length or 'mem') -> list of per-round dicts
    for r in range(a.rounds):
        order = SETTINGS[r % len(SETTINGS):] + SETTINGS[:r % len(SETTINGS)]
        for kv, flash in order:
            e = Engine(a.engine, a.model, context, a.threads, kv, flash)
            anon_after_load = e.status_kib("RssAnon")
            for n in lengths:
                d = e.generate(f"{r}-{n}", prompts[n], a.tokens)
                t = d["timings"]
                rows.setdefault((kv, flash, n), []).append(
                    {"round": r, "prompt_tokens": d["usage"]["prompt_tokens"], "ttft_ms": t["ttft_ms"],
                     "prefill": t["prefill_tokens_per_s"], "decode": t["decode_tokens_per_s"]})
            rows.setdefault((kv, flash, "mem"), []).append(
                {"round": r, "anon_mib": anon_after_load / 1024, "hwm_mib": e.status_kib("VmHWM") / 1024})
            e.close()
            print(f"round {r + 1}/{a.rounds}: {kv}/{flash} done", file=sys.stderr)

    base = SETTINGS[0]

    def ratio(kv, flash, n, key):
        mine = {x["round"]: x[key] for x in rows[(kv, flash, n)]}
        theirs = {x["round"]: x[key] for x in rows[(base[0], base[1], n)]}
        return statistics.median(mine[r] / theirs[r] for r in mine if theirs.get(r))

    med = lambda xs: statistics.median(xs)
    print(f"gemma-engine, context {context}, 1 slot, {a.threads} threads, {a.tokens} generated tokens, "
          f"{a.rounds} rounds; medians, and x = median of per-round ratios to {base[0]}/flash {base[1]}")
    print()
    print("| KV cache / flash attention | anonymous memory after load | peak RSS |")
    print("|---|---|---|")
    for kv, flash in SETTINGS:
        m = rows[(kv, flash, "mem")]
        print(f"| {kv} / {flash} | {med([x['anon_mib'] for x in m]):.0f} MiB | "
              f"{med([x['hwm_mib'] for x in m]):.0f} MiB |")
    print()
    print("| KV cache / flash attention | prompt tokens | time to first token | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|---|")
    for n in lengths:
        for kv, flash in SETTINGS:
            xs = rows[(kv, flash, n)]
            cells = []
            for key, fmt in (("ttft_ms", "{:.0f} ms"), ("prefill", "{:.0f}"), ("decode", "{:.1f}")):
                v = fmt.format(med([x[key] for x in xs]))
                if (kv, flash) != base:
                    v += f" ({ratio(kv, flash, n, key):.2f}x)"
                cells.append(v)
            print(f"| {kv} / {flash} | {med([x['prompt_tokens'] for x in xs]):.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
