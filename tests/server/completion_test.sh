#!/usr/bin/env bash
# gptj serve, one process: health, models, plain and streaming completions (curl and Python),
# greedy tokens equal to Hugging Face's (via the token_ids extension), logprobs, echo, prompt scoring
# (echo + logprobs + max_tokens 0, against Hugging Face's logits), stop strings,
# n > 1 with a seed, 404/405, and a clean exit 0 at SIGTERM.
source "$(dirname "$0")/common.sh" "$@"
start_server "$GPTJ" serve --model "$MODEL" --port 0

# curl: plain and streaming.
out=$(curl -sS --max-time 30 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model":"model","prompt":"Hello, my name is","max_tokens":5,"temperature":0}')
echo "$out" | grep -q '"object":"text_completion"' || fail "curl plain completion: $out"
echo "$out" | grep -q '"finish_reason":"length"' || fail "curl plain finish_reason: $out"
sse=$(curl -sS -N --max-time 30 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt":"Hello","max_tokens":3,"temperature":0,"stream":true}')
[ "$(echo "$sse" | grep -c '^data: {')" = 3 ] || fail "curl stream: expected 3 chunks: $sse"
[ "$(echo "$sse" | tail -n 1)" = "data: [DONE]" ] || fail "curl stream must end with data: [DONE]: $sse"

GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])

status, _, body = request(port, "GET", "/health")
check(status == 200 and json.loads(body)["status"] == "ok", "/health: %d %r" % (status, body))
status, _, body = request(port, "GET", "/v1/models")
models = json.loads(body)
check(status == 200 and models["object"] == "list" and models["data"][0]["object"] == "model", "/v1/models %r" % body)
name = models["data"][0]["id"]
check(request(port, "GET", "/v1/models/" + name)[0] == 200, "/v1/models/{id}")
check(request(port, "GET", "/v1/models/nope")[0] == 404, "/v1/models/nope must be 404")
check(request(port, "GET", "/nope")[0] == 404, "unknown path must be 404")
status, headers, _ = request(port, "GET", "/v1/completions")
check(status == 405 and headers.get("allow") == "POST", "GET /v1/completions must be 405 with Allow: POST")
check(request(port, "POST", "/health", {})[0] == 405, "POST /health must be 405")

# Greedy tokens equal the Hugging Face fixture, plain and streamed; all four prompts in one request too.
cases = golden(DATA)
for prompt, expected in cases:
    status, r = complete(port, {"prompt": prompt, "max_tokens": 16, "temperature": 0})
    check(status == 200, "completion status %d %r" % (status, r))
    choice = r["choices"][0]
    check(choice["token_ids"] == expected, "greedy tokens %r != expected %r" % (choice["token_ids"], expected))
    check(choice["finish_reason"] == "length" and choice["index"] == 0, "finish/index %r" % choice)
    check(r["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 16, "total_tokens": len(prompt) + 16},
          "usage %r" % r["usage"])
    check(r["id"].startswith("cmpl-") and r["object"] == "text_completion" and r["model"] == name, "envelope %r" % r)
    chunks, done = stream(port, {"prompt": prompt, "max_tokens": 16, "temperature": 0})
    check(done, "stream without [DONE]")
    streamed = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    check(streamed == expected, "streamed tokens %r != %r" % (streamed, expected))
    check("".join(c["choices"][0]["text"] for c in chunks) == choice["text"], "streamed text != plain text")
    check(chunks[-1]["choices"][0]["finish_reason"] == "length", "last chunk finish_reason")
status, r = complete(port, {"prompt": [p for p, _ in cases], "max_tokens": 16, "temperature": 0})
check(status == 200 and [c["token_ids"] for c in r["choices"]] == [e for _, e in cases], "array of token prompts")
check([c["index"] for c in r["choices"]] == [0, 1, 2, 3], "choice indices")

# Logprobs and echo.
prompt, expected = cases[1]
status, r = complete(port, {"prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 3, "echo": True})
c = r["choices"][0]
check(status == 200 and c["token_ids"] == prompt + expected[:4], "echo token_ids %r" % c)
lp = c["logprobs"]
check(len(lp["tokens"]) == len(prompt) + 4 and lp["token_logprobs"][0] is None, "echo logprobs %r" % lp)
for i in range(len(prompt), len(prompt) + 4):
    check(lp["token_logprobs"][i] <= 0 and len(lp["top_logprobs"][i]) == 3, "logprobs entry %d" % i)
    check(abs(max(lp["top_logprobs"][i].values()) - lp["token_logprobs"][i]) < 1e-4, "greedy = top-1 logprob")
check("".join(lp["tokens"]) == c["text"], "logprobs tokens joined = text")

# Scoring (lm-eval's loglikelihood request): echo + logprobs + max_tokens 0 gives the prompt's token
# logprobs, equal to log-softmax of Hugging Face's logits (ids < 50257), first token null; the echoed
# logprobs of a normal request are the same numbers.
import array, math
ref = array.array("f")
ref.frombytes(open(os.path.join(DATA, "tiny-gptj-a", "expected", "logits_p7_all.f32.bin"), "rb").read())
vocab = len(ref) // len(prompt)
status, r = complete(port, {"prompt": prompt, "max_tokens": 0, "logprobs": 1, "echo": True})
check(status == 200, "scoring request: %d %r" % (status, r))
c = r["choices"][0]
check(c["finish_reason"] == "length" and c["token_ids"] == prompt and r["usage"]["completion_tokens"] == 0,
      "scoring choice %r" % c)
scores = c["logprobs"]["token_logprobs"]
check(len(scores) == len(prompt) and scores[0] is None, "scoring logprobs %r" % scores)
for i in range(1, len(prompt)):
    row = ref[(i - 1) * vocab:(i - 1) * vocab + 50257]
    m = max(row)
    want = row[prompt[i]] - (m + math.log(sum(math.exp(v - m) for v in row)))
    check(abs(scores[i] - want) < 1e-4, "prompt token %d: logprob %r, want %r" % (i, scores[i], want))
    check(len(c["logprobs"]["top_logprobs"][i]) == 1, "one alternative per prompt token")
check(lp["token_logprobs"][:len(prompt)] == scores, "echoed prompt logprobs of the 4-token request")
status, r = complete(port, {"prompt": prompt, "max_tokens": 0})
check(status == 400 and r["error"]["param"] == "max_tokens", "max_tokens 0 without echo must be 400: %r" % r)

# Text prompts: a stop string cuts the text (finish "stop"), plain and streamed.
status, r = complete(port, {"prompt": "The meaning of life is", "max_tokens": 16, "temperature": 0})
full = r["choices"][0]["text"]
check(len(full) > 12, "need a longer greedy text: %r" % full)
stop = full[5:9]
want = full[:full.index(stop)]
status, r = complete(port, {"prompt": "The meaning of life is", "max_tokens": 16, "temperature": 0, "stop": [stop, "zzzz"]})
check(r["choices"][0]["text"] == want and r["choices"][0]["finish_reason"] == "stop",
      "stop: %r (want %r, stop %r)" % (r["choices"][0], want, stop))
chunks, done = stream(port, {"prompt": "The meaning of life is", "max_tokens": 16, "temperature": 0, "stop": stop})
text = "".join(c["choices"][0]["text"] for c in chunks)
check(done and text == want and chunks[-1]["choices"][0]["finish_reason"] == "stop", "streamed stop: %r" % text)

# n > 1, seeded: distinct sampled choices, reproducible; usage counts the prompt once.
payload = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 1.0, "n": 3, "seed": 7}
s1, r1 = complete(port, payload)
s2, r2 = complete(port, payload)
check(s1 == 200 and len(r1["choices"]) == 3, "n=3 %r" % r1)
check([c["token_ids"] for c in r1["choices"]] == [c["token_ids"] for c in r2["choices"]], "same seed, same choices")
check(len({tuple(c["token_ids"]) for c in r1["choices"]}) > 1, "n choices should differ (seed + i)")
check(r1["usage"]["completion_tokens"] == 24, "usage with n=3 %r" % r1["usage"])
chunks, done = stream(port, dict(payload, stream_options={"include_usage": True}))
check(done and chunks[-1]["usage"]["completion_tokens"] == 24 and chunks[-1]["choices"] == [], "include_usage")
for i in range(3):
    ids = [t for c in chunks for ch in c["choices"] if ch["index"] == i for t in ch["token_ids"]]
    check(ids == r1["choices"][i]["token_ids"], "streamed choice %d differs from plain" % i)

m = metrics(port)
check(m['gptj_requests_total{status="200"}'] >= 10 and m["gptj_generated_tokens_total"] > 100, "metrics counts")
check(m["gptj_kv_blocks_used"] == 0 and m["gptj_kv_blocks_free"] > 0 and m["gptj_ready"] == 1, "metrics gauges")
check(m["gptj_time_to_first_token_seconds_count"] > 0 and m["gptj_inter_token_latency_seconds_count"] > 0, "histograms")
print("completion checks passed")
PY

kill -TERM "$SERVER_PID"
wait_server_exit 30
[ "$SERVER_CODE" = 0 ] || fail "exit code $SERVER_CODE after SIGTERM"
echo PASS
