#!/usr/bin/env python3
"""Time to first token with one image against the same prompt without it, on gemma-engine.

One engine with the projector; each round sends the text-only request and the request with the
image (a 256x256 PPM, base64, so the decode and resize run too), one after the other, their order
alternating between rounds; no session, so nothing is reused. Time to first token is the engine's
own (`done.timings.ttft_ms`). Prints per-round figures, the medians and the median of per-round
ratios (with image / without). Standard library only.

    vision_bench.py ENGINE MODEL PROJECTOR [--rounds 15] [--tokens 8]
"""

import argparse
import base64
import json
import queue
import statistics
import subprocess
import sys
import threading

WAIT_S = 300
PROMPT_BEFORE = "Here is a photograph of a harbor at dawn, with boats and a lighthouse: "
PROMPT_AFTER = " Describe what the photograph shows, in one sentence. It shows"


def image_ppm(side: int = 256) -> bytes:
    head = f"P6\n{side} {side}\n255\n".encode()
    body = bytearray()
    for y in range(side):
        for x in range(side):
            body += bytes(((x * 255) // side, (y * 255) // side, ((x ^ y) & 255)))
    return head + bytes(body)


class Engine:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next(self):
        event = self.events.get(timeout=WAIT_S)
        if event is None:
            sys.exit("gemma-engine exited")
        return event

    def send(self, command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def done(self, rid):
        while True:
            event = self.next()
            if event.get("id") != rid:
                continue
            if event["event"] == "error":
                sys.exit(f"request {rid} failed: {event['message']}")
            if event["event"] == "done":
                return event


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("engine")
    parser.add_argument("model")
    parser.add_argument("projector")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()

    engine = Engine([args.engine, "--model", args.model, "--mmproj", args.projector,
                     "--context", "2048", "--parallel", "1"])
    while True:
        event = engine.next()
        if event["event"] == "ready":
            break
        if event["event"] == "error":
            sys.exit(event["message"])
    vision = event["vision"]
    data = base64.b64encode(image_ppm()).decode()

    def request(rid, with_image):
        parts = [{"type": "text", "text": PROMPT_BEFORE}]
        if with_image:
            parts.append({"type": "image", "data": data})
        parts.append({"type": "text", "text": PROMPT_AFTER})
        return {"op": "generate", "id": rid, "prompt": {"format": "completion"},
                "messages": [{"role": "user", "content": parts}],
                "params": {"max_tokens": args.tokens, "temperature": 0}}

    # One of each first, unmeasured: first-use allocations are not the steady cost.
    for rid, img in (("warm-a", False), ("warm-b", True)):
        engine.send(request(rid, img))
        engine.done(rid)

    plain, image, ratios = [], [], []
    print(f"projector: {vision['projector_type']}, {vision['image_size']}-pixel images, "
          f"{vision['tokens_per_image']} tokens per image (random weights: structural figures)")
    print("round  without ms  with ms  ratio  prompt tokens (without / with)")
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {}
        for img in order:
            rid = f"r{r}-{'img' if img else 'txt'}"
            engine.send(request(rid, img))
            got[img] = engine.done(rid)
        a = got[False]["timings"]["ttft_ms"]
        b = got[True]["timings"]["ttft_ms"]
        plain.append(a)
        image.append(b)
        ratios.append(b / a)
        print(f"{r + 1:5d}  {a:10.1f}  {b:7.1f}  {b / a:5.2f}  "
              f"{got[False]['usage']['prompt_tokens']} / {got[True]['usage']['prompt_tokens']}")
    print(f"median time to first token: without {statistics.median(plain):.1f} ms, "
          f"with one image {statistics.median(image):.1f} ms, "
          f"ratio {statistics.median(ratios):.2f}x (median of {args.rounds} per-round ratios)")
    engine.proc.stdin.close()
    engine.proc.wait(timeout=WAIT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
