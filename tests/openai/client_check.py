"""The official `openai` Python package against `gemmactl serve` (run by tests/serve_openai.rs).

Usage: client_check.py BASE_URL MODEL. The server runs with one decode slot and no queue, so a
second request while one streams is refused with 429. Prints one line per check; exits non-zero
with the reason at the first failure.
"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def check(name, ok, detail=""):
    if not ok:
        sys.exit(f"FAILED {name}: {detail}")
    print(f"ok {name}")


# Models.
ids = [m.id for m in client.models.list().data]
check("models list", model in ids, ids)

# Text completion, not streamed: usage adds up, the stop string ends it.
r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
u = r.usage
check("completion text", len(r.choices) == 1 and r.choices[0].text.strip() != "", r)
check("completion usage", u.completion_tokens == 6 and u.total_tokens == u.prompt_tokens + 6 and r.choices[0].finish_reason == "length", u)
first_word = r.choices[0].text.split()[0]
r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0, stop=[first_word])
check("stop string", first_word not in r.choices[0].text and r.choices[0].finish_reason == "stop", repr(r.choices[0].text))

# Chat, not streamed.
c = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}], max_tokens=5, temperature=0)
check("chat reply", c.choices[0].message.role == "assistant" and c.object == "chat.completion", c)
check("chat usage", c.usage.completion_tokens >= 1 and c.usage.prompt_tokens > 3, c.usage)

# Chat, streamed, with the usage chunk last.
pieces, usage, finish = [], None, None
for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Count: one, two,"}], max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage
    for ch in chunk.choices:
        if ch.delta.content:
            pieces.append(ch.delta.content)
        if ch.finish_reason:
            finish = ch.finish_reason
check("chat stream", "".join(pieces) != "" and finish in ("stop", "length"), (pieces, finish))
check("chat stream usage", usage is not None and usage.completion_tokens >= 1, usage)

# Completions, streamed, same text as not streamed (greedy).
streamed = "".join(c.choices[0].text for c in client.completions.create(model=model, prompt="Water boils at", max_tokens=5, temperature=0, stream=True) if c.choices)
whole = client.completions.create(model=model, prompt="Water boils at", max_tokens=5, temperature=0).choices[0].text
check("stream equals whole", streamed == whole, (streamed, whole))

# Seed: the same seed samples the same text.
a = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=42).choices[0].text
b = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=42).choices[0].text
check("seed reproducible", a == b, (a, b))

# Errors.
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    check("unknown model 404", False, "no error")
except openai.NotFoundError as e:
    check("unknown model 404", e.status_code == 404 and "no-such-model" in str(e), e)
try:
    client.completions.create(model=model, prompt="x", max_tokens=1, temperature=-1)
    check("bad parameter 400", False, "no error")
except openai.BadRequestError as e:
    check("bad parameter 400", e.status_code == 400 and "temperature" in str(e), e)
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], n=2)
    check("n > 1 is 400", False, "no error")
except openai.BadRequestError as e:
    check("n > 1 is 400", "n = 2" in str(e), e)

# Queue full: one decode slot, no queue; a second request while one streams gets 429.
stream = client.completions.create(model=model, prompt="Tell me a long story:", max_tokens=400, temperature=0, stream=True)
next(iter(stream))
try:
    client.completions.create(model=model, prompt="x", max_tokens=1)
    check("queue full 429", False, "no error")
except openai.RateLimitError as e:
    check("queue full 429", e.status_code == 429 and e.response.headers.get("retry-after") is not None, e)
finally:
    stream.close()
print("all checks passed")
