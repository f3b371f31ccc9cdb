#!/usr/bin/env bash
# vLLM's POST /tokenize and POST /detokenize, and max_model_len in /v1/models, on tiny-gptj-a.
# Server 1 (--api-key-file, one I/O thread, GPTJ_SERVE_PREPARE_DELAY_MS=3000) reads its config.json
# from a FIFO, so it is held loading until the test writes the file: both endpoints answer 503 then
# (401 without the key); once ready they need the key, and a /tokenize waits out the preparation
# delay on a request worker while /health answers at once (it is not tokenized on the I/O thread).
# Server 2: the shapes, ids against GPT-2's and against what /v1/completions and
# /v1/chat/completions count, round trips, the 400s naming the field, and the request counters.
source "$(dirname "$0")/common.sh" "$@"
mkdir "$WORK/model"
for f in "$(cd "$MODEL" && pwd)"/*; do [ "$(basename "$f")" = config.json ] || ln -s "$f" "$WORK/model/"; done
mkfifo "$WORK/model/config.json"
echo "tokenize-key" >"$WORK/key"
GPTJ_SERVE_PREPARE_DELAY_MS=3000 launch_server "$GPTJ" serve --model "$WORK/model" --port 0 --http-threads 1 \
  --api-key-file "$WORK/key"
python3 - "$PORT" "$WORK/model/config.json" "$MODEL/config.json" <<'PY'
import sys, threading, time
from serverlib import *
port, fifo, config = int(sys.argv[1]), sys.argv[2], sys.argv[3]
auth = {"Authorization": "Bearer tokenize-key"}
bodies = {"/tokenize": {"prompt": "hi"}, "/detokenize": {"tokens": [5303]}}

for path, body in bodies.items():
    status, r = post_json(port, path, body, auth)
    check(status == 503 and r["error"]["type"] == "server_not_ready", "%s while loading: %d %r" % (path, status, r))
    status, r = post_json(port, path, body)
    check(status == 401 and "API key" in r["error"]["message"], "%s without the key: %d %r" % (path, status, r))
check(request(port, "GET", "/health")[0] == 503, "/health while loading")
with open(fifo, "w") as f:  # the server reads its config: loading goes on
    f.write(open(config).read())
deadline = time.time() + 60
while request(port, "GET", "/health")[0] != 200:
    check(time.time() < deadline, "/health not 200 within 60 s of the config")
    time.sleep(0.1)

for path, body in bodies.items():
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, r = post_json(port, path, body, headers)
        check(status == 401, "%s with %r: %d %r" % (path, headers, status, r))
out = {}
def tokenize():
    start = time.monotonic()
    out["r"] = post_json(port, "/tokenize", {"prompt": "Hello world"}, auth)
    out["took"] = time.monotonic() - start
t = threading.Thread(target=tokenize)
t.start()
time.sleep(0.3)
probes = 0
while t.is_alive():
    start = time.monotonic()
    check(request(port, "GET", "/health")[0] == 200, "/health while a /tokenize is prepared")
    took = time.monotonic() - start
    check(took < 1.5, "/health took %.2f s while a /tokenize was prepared" % took)
    probes += 1
    time.sleep(0.1)
t.join()
status, r = out["r"]
check(status == 200 and r["tokens"] == [15496, 995], "/tokenize with the key: %d %r" % (status, r))
check(out["took"] >= 2.8, "/tokenize answered in %.2f s: the preparation delay did not apply" % out["took"])
check(probes >= 3, "only %d /health probes while the /tokenize was pending" % probes)
status, r = post_json(port, "/detokenize", {"tokens": [15496, 995]}, auth)
check(status == 200 and r == {"prompt": "Hello world"}, "/detokenize with the key: %d %r" % (status, r))
print("tokenize: 503 while loading, auth, prepared on a request worker (%d /health probes) ok" % probes)
PY
kill -TERM "$SERVER_PID"
wait_server_exit 30
[ "$SERVER_CODE" = 0 ] || fail "server 1 exited $SERVER_CODE"

start_server "$GPTJ" serve --model "$MODEL" --port 0
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])

def tokenize(body):
    return post_json(port, "/tokenize", body)

def detokenize(body):
    return post_json(port, "/detokenize", body)

before = metrics(port)
answered = {200: 0, 400: 0, 405: 0}

def ok(status, r, what):
    check(status == 200, "%s: %d %r" % (what, status, r))
    answered[200] += 1

status, r = tokenize({"prompt": "Hello world"})
ok(status, r, "tokenize")
check(r == {"count": 2, "max_model_len": 2048, "tokens": [15496, 995]}, "GPT-2's ids for 'Hello world': %r" % r)
check(list(r) == ["count", "max_model_len", "tokens"], "vLLM's field order: %r" % list(r))

status, _, raw = request(port, "GET", "/v1/models")
check(status == 200, "/v1/models: %d" % status)
entry = json.loads(raw)["data"][0]
check(entry["max_model_len"] == 2048, "/v1/models entry lacks max_model_len 2048: %r" % entry)
status, _, raw = request(port, "GET", "/v1/models/" + entry["id"])
check(status == 200 and json.loads(raw)["max_model_len"] == 2048, "/v1/models/ID: %d %r" % (status, raw))

# The same ids as a completion's prompt (echo gives the prompt's ids first).
text = "The quick brown fox, naïve café 東京 🙂 <|endoftext|> jumps\n\n  over"
status, r = tokenize({"prompt": text, "add_special_tokens": True})
ok(status, r, "tokenize text")
ids = r["tokens"]
check(r["count"] == len(ids) and 50256 in ids, "count and <|endoftext|>: %r" % r)
status, c = complete(port, {"prompt": text, "max_tokens": 1, "echo": True, "temperature": 0})
check(status == 200 and c["usage"]["prompt_tokens"] == len(ids), "completion counts %r" % c.get("usage"))
check(c["choices"][0]["token_ids"][:len(ids)] == ids, "tokenize %r != the completion's prompt ids %r" % (ids, c["choices"][0]["token_ids"]))
status, r = tokenize({"prompt": text, "add_special_tokens": False})
ok(status, r, "add_special_tokens false")
check(r["tokens"] == ids, "add_special_tokens changes nothing")
status, r = detokenize({"tokens": ids})
ok(status, r, "detokenize")
check(r == {"prompt": text}, "round trip: %r" % r)

# Chat: the template's rendering, as /v1/chat/completions counts it.
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
status, r = tokenize({"messages": messages})
ok(status, r, "tokenize messages")
status, p = tokenize({"prompt": "Be brief.\n\nUser: Hi there\nAssistant:"})
ok(status, p, "tokenize the rendered template")
check(r == p, "messages %r != the rendered template %r" % (r, p))
status, c = post_json(port, "/v1/chat/completions", {"messages": messages, "max_tokens": 1})
check(status == 200 and c["usage"]["prompt_tokens"] == r["count"], "chat counts %r" % c.get("usage"))
status, r = tokenize({"messages": messages, "add_generation_prompt": True, "add_special_tokens": False})
ok(status, r, "messages with add_generation_prompt true")
check(r == p, "add_generation_prompt true is the default")

# Edges: empty text and ids; an id that ends inside a UTF-8 character; <|endoftext|>.
status, r = tokenize({"prompt": ""})
ok(status, r, "empty prompt")
check(r == {"count": 0, "max_model_len": 2048, "tokens": []}, "empty prompt: %r" % r)
status, r = detokenize({"tokens": []})
ok(status, r, "no tokens")
check(r == {"prompt": ""}, "no tokens: %r" % r)
status, r = tokenize({"prompt": "🙂"})
ok(status, r, "emoji")
check(len(r["tokens"]) > 1, "🙂 is one token? %r" % r)
status, part = detokenize({"tokens": r["tokens"][:1]})
ok(status, part, "part of a character")
check(part["prompt"] and set(part["prompt"]) == {"\ufffd"}, "bytes that are not UTF-8 become U+FFFD: %r" % part)
status, r = detokenize({"tokens": [50256], "model": "anything"})
ok(status, r, "eos")
check(r == {"prompt": "<|endoftext|>"}, "eos: %r" % r)

# (path, body, param, words in the message)
table = [
    ("/tokenize", "{not json", None, "not valid JSON"),
    ("/tokenize", [1, 2], None, "JSON object"),
    ("/tokenize", {}, "prompt", "required"),
    ("/tokenize", {"prompt": None}, "prompt", "required"),
    ("/tokenize", {"prompt": 5}, "prompt", "must be a string"),
    ("/tokenize", {"prompt": ["a", "b"]}, "prompt", "must be a string"),
    ("/tokenize", {"prompt": [1, 2]}, "prompt", "must be a string"),
    ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens", "true or false"),
    ("/tokenize", {"prompt": "a", "model": 3}, "model", "string"),
    ("/tokenize", {"prompt": "a", "messages": messages}, "prompt", "not both"),
    ("/tokenize", {"messages": []}, "messages", "non-empty"),
    ("/tokenize", {"messages": "hi"}, "messages", "non-empty"),
    ("/tokenize", {"messages": [{"role": "robot", "content": "x"}]}, "messages", "robot"),
    ("/tokenize", {"messages": [{"role": "user"}]}, "messages", "content"),
    ("/tokenize", {"messages": messages, "add_generation_prompt": False}, "add_generation_prompt", "not supported"),
    ("/tokenize", {"messages": messages, "add_generation_prompt": 0}, "add_generation_prompt", "true or false"),
    ("/detokenize", "{not json", None, "not valid JSON"),
    ("/detokenize", "\"text\"", None, "JSON object"),
    ("/detokenize", {}, "tokens", "required"),
    ("/detokenize", {"prompt": "hi"}, "tokens", "required"),
    ("/detokenize", {"tokens": "15496"}, "tokens", "array"),
    ("/detokenize", {"tokens": 15496}, "tokens", "array"),
    ("/detokenize", {"tokens": [15496, "995"]}, "tokens", "only integers"),
    ("/detokenize", {"tokens": [1.0]}, "tokens", "only integers"),
    ("/detokenize", {"tokens": [[1]]}, "tokens", "only integers"),
    ("/detokenize", {"tokens": [True]}, "tokens", "only integers"),
    ("/detokenize", {"tokens": [-1]}, "tokens", "outside the vocabulary [0, 50257)"),
    ("/detokenize", {"tokens": [1, 50257]}, "tokens", "padding"),
    ("/detokenize", {"tokens": [50399]}, "tokens", "padding"),
    ("/detokenize", {"tokens": [50400]}, "tokens", "outside the vocabulary [0, 50257)"),
    ("/detokenize", {"tokens": [2 ** 64 - 1]}, "tokens", "outside the vocabulary"),
    ("/detokenize", {"tokens": [1], "model": ["m"]}, "model", "string"),
]
for path, body, want_param, words in table:
    status, _, raw = request(port, "POST", path, body)
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError):
        fail("%s %r: answer is not an OpenAI error: %r" % (path, body, raw[:200]))
    shown = "%s %s" % (path, str(body)[:60])
    check(status == 400, "%s: status %d, want 400 (%r)" % (shown, status, err))
    check(err.get("param") == want_param, "%s: param %r, want %r" % (shown, err.get("param"), want_param))
    check(words in err["message"], "%s: message %r lacks %r" % (shown, err["message"], words))
    check(err["type"] == "invalid_request_error" and err["code"] is None, "%s: error %r" % (shown, err))
    answered[400] += 1
check("50257..50399" in detokenize({"tokens": [50300]})[1]["error"]["message"], "the padding range is named")
answered[400] += 1
for path in ("/tokenize", "/detokenize"):
    status, headers, _ = request(port, "GET", path)
    check(status == 405 and headers.get("allow") == "POST", "GET %s: %d %r" % (path, status, headers))
    answered[405] += 1

m = metrics(port)
for code, n in answered.items():
    key = 'gptj_requests_total{status="%d"}' % code
    got = m.get(key, 0) - before.get(key, 0)
    # the completions above add two 200s; the metrics reads themselves are counted too
    check(got >= n, "%s grew by %d, want >= %d" % (key, got, n))
check(m['gptj_requests_total{status="400"}'] - before.get('gptj_requests_total{status="400"}', 0) == answered[400],
      "every refusal counted once as 400")
print("tokenize: shapes, %d answers, %d refusals naming the field, counters ok" % (answered[200], answered[400]))
PY
echo PASS
