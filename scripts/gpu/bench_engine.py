#!/usr/bin/env python3
"""Time one gemma-engine configuration: load, then a warm-up and N measured greedy requests.

Prints one JSON object: median time to first token, prefill and decode tokens/s (as the engine's
own `done` events report them), load time, the devices the `ready` event names, the engine's peak
resident memory (VmHWM) and, on an NVIDIA GPU, its peak GPU memory (sampled with nvidia-smi).
Standard library only: it runs where there is no pip and no network.

    bench_engine.py ENGINE MODEL.gguf GPU_LAYERS [RUNS] [PROMPT_WORDS] [MAX_TOKENS]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    engine, model, gpu_layers = argv[0], argv[1], argv[2]
    runs = int(argv[3]) if len(argv) > 3 else 3
    words = int(argv[4]) if len(argv) > 4 else 400
    max_tokens = int(argv[5]) if len(argv) > 5 else 128
    cmd = [engine, "--model", model, "--context", "4096", "--parallel", "1", "--gpu-layers", gpu_layers]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    stderr_tail = []
    threading.Thread(target=lambda: [stderr_tail.append(l) for l in proc.stderr], daemon=True).start()

    gpu_peak = [0]
    done_sampling = threading.Event()
    if shutil.which("nvidia-smi"):
        def sample():
            while not done_sampling.is_set():
                try:
                    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=5).stdout
                    for line in out.splitlines():
                        pid, mib = [x.strip() for x in line.split(",")[:2]]
                        if pid == str(proc.pid):
                            gpu_peak[0] = max(gpu_peak[0], int(mib))
                except Exception:
                    pass
                done_sampling.wait(0.2)
        threading.Thread(target=sample, daemon=True).start()

    def event():
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: the engine ended early: {''.join(stderr_tail[-5:])}")
        return json.loads(line)

    started = time.time()
    while True:
        e = event()
        if e["event"] == "ready":
            ready = e
            break
        if e["event"] == "error":
            raise SystemExit(f"error: the engine could not load the model: {e['message']}")
    # Varied words so the prompt is not one repeated token.
    vocab = "the river city morning light under over quiet stone garden winter bright market road across".split()
    prompt = " ".join(vocab[(i * 7) % len(vocab)] for i in range(words))
    results = []
    for i in range(runs + 1):
        request = {"op": "generate", "id": f"r{i}", "messages": [{"role": "user", "content": f"{i} {prompt}"}],
                   "prompt": {"format": "completion"}, "params": {"max_tokens": max_tokens, "temperature": 0}}
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        while True:
            e = event()
            if e["event"] == "done":
                if i > 0:  # the first request warms up the kernels and caches
                    results.append(e)
                break
            if e["event"] == "error":
                raise SystemExit(f"error: request failed: {e['message']}")
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next((int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:")), None)
    done_sampling.set()
    proc.stdin.close()
    proc.wait(timeout=30)
    med = lambda key: statistics.median(r["timings"][key] for r in results)
    print(json.dumps({
        "gpu_layers_requested": gpu_layers,
        "gpu_layers": ready["gpu_layers"],
        "devices": [d["description"] or d["name"] for d in ready["devices"]],
        "load_ms": ready["load_ms"],
        "prompt_tokens": results[0]["usage"]["prompt_tokens"],
        "completion_tokens": statistics.median(r["usage"]["completion_tokens"] for r in results),
        "ttft_ms": med("ttft_ms"),
        "prefill_tokens_per_s": med("prefill_tokens_per_s"),
        "decode_tokens_per_s": med("decode_tokens_per_s"),
        "peak_rss_bytes": hwm,
        "peak_gpu_mib": gpu_peak[0] or None,
        "runs": runs,
        "wall_s": round(time.time() - started, 2),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
