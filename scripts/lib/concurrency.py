"""Aggregate decode tokens/s of N concurrent streaming HTTP clients against `gemmactl serve`.

Usage: concurrency.py BASE_URL N [N ...]. Each client sends one streaming chat request of 64
greedy tokens; the figure is all completion tokens (from the usage chunks) over the wall time from
the first request sent to the last reply ended, plus the median client-side time to first token.
Standard library only.
"""

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

base = urllib.parse.urlparse(sys.argv[1])


def one(results, i):
    body = json.dumps({"model": "gemma3-270m", "max_tokens": 64, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": f"Write a story about the number {i}."}]})
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=600)
    start = time.monotonic()
    conn.request("POST", base.path + "/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first, tokens = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and first is None:
            first = time.monotonic() - start
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    results.append((first or 0.0, tokens))


print("clients  tokens  wall_s  aggregate_tok_s  median_ttft_ms")
for n in map(int, sys.argv[2:]):
    results = []
    threads = [threading.Thread(target=one, args=(results, i)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    tokens = sum(t for _, t in results)
    ttft = statistics.median(f for f, _ in results) * 1000
    print(f"{n:7d}  {tokens:6d}  {wall:6.1f}  {tokens / wall:15.1f}  {ttft:14.0f}")
