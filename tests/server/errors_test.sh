#!/usr/bin/env bash
# Bad requests get the right status and an OpenAI error naming the field; the body size limit; the
# queue limit (429); Bearer auth on and off.
source "$(dirname "$0")/common.sh" "$@"
echo "sekret-key" >"$WORK/key"
start_server "$GPTJ" serve --model "$MODEL" --port 0 --max-body-bytes 16384 --api-key-file "$WORK/key"
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])
auth = {"Authorization": "Bearer sekret-key"}

# Auth: /v1/* needs the key; /health and /metrics do not.
for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret-key"}):
    status, r = complete(port, {"prompt": "hi", "max_tokens": 1}, headers)
    check(status == 401 and "API key" in r["error"]["message"], "auth %r: %d %r" % (headers, status, r))
check(request(port, "GET", "/v1/models")[0] == 401, "/v1/models without key")
check(request(port, "GET", "/v1/models", headers=auth)[0] == 200, "/v1/models with key")
check(request(port, "GET", "/health")[0] == 200, "/health needs no key")
status, r = complete(port, {"prompt": "hi", "max_tokens": 1}, auth)
check(status == 200, "with the key: %d %r" % (status, r))

# (body, status, param, words in the message)
table = [
    ("{not json", 400, None, "not valid JSON"),
    ("[1, 2]", 400, None, "JSON object"),
    ({"max_tokens": 3}, 400, "prompt", "required"),
    ({"prompt": 5}, 400, "prompt", "must be a string"),
    ({"prompt": []}, 400, "prompt", "empty"),
    ({"prompt": [[]]}, 400, "prompt", "empty"),
    ({"prompt": [1, "a"]}, 400, "prompt", "only integers"),
    ({"prompt": ["a", 1]}, 400, "prompt", "must be a string"),
    ({"prompt": [50400]}, 400, "prompt", "outside the vocabulary"),
    ({"prompt": [-1]}, 400, "prompt", "outside the vocabulary"),
    ({"prompt": "hi", "max_tokens": "5"}, 400, "max_tokens", "integer"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens", "between"),
    ({"prompt": "hi", "max_tokens": 2.5}, 400, "max_tokens", "integer"),
    ({"prompt": [1] * 2000, "max_tokens": 100}, 400, "max_tokens", "maximum context length"),
    ({"prompt": "hi", "temperature": 3}, 400, "temperature", "between"),
    ({"prompt": "hi", "temperature": "hot"}, 400, "temperature", "number"),
    ({"prompt": "hi", "top_p": 1.5}, 400, "top_p", "between"),
    ({"prompt": "hi", "n": 0}, 400, "n", "between"),
    ({"prompt": "hi", "n": 17}, 400, "n", "between"),
    ({"prompt": "hi", "stream": "yes"}, 400, "stream", "true or false"),
    ({"prompt": "hi", "echo": 1}, 400, "echo", "true or false"),
    ({"prompt": "hi", "logprobs": 21}, 400, "logprobs", "between"),
    ({"prompt": "hi", "logprobs": True}, 400, "logprobs", "integer"),
    ({"prompt": "hi", "stop": 5}, 400, "stop", "string"),
    ({"prompt": "hi", "stop": ["a", 1]}, 400, "stop", "string"),
    ({"prompt": "hi", "presence_penalty": 2.5}, 400, "presence_penalty", "between"),
    ({"prompt": "hi", "frequency_penalty": -3}, 400, "frequency_penalty", "between"),
    ({"prompt": "hi", "repetition_penalty": 0}, 400, "repetition_penalty", "between"),
    ({"prompt": "hi", "top_k": -2}, 400, "top_k", "between"),
    ({"prompt": "hi", "no_repeat_ngram_size": -1}, 400, "no_repeat_ngram_size", "between"),
    ({"prompt": "hi", "seed": "x"}, 400, "seed", "integer"),
    ({"prompt": "hi", "user": 5}, 400, "user", "string"),
    ({"prompt": "hi", "model": 5}, 400, "model", "string"),
    ({"prompt": "hi", "best_of": 3}, 400, "best_of", "not supported"),
    ({"prompt": "hi", "suffix": "x"}, 400, "suffix", "not supported"),
    ({"prompt": "hi", "logit_bias": {"x": 5}}, 400, "logit_bias", "not a token id"),
    ({"prompt": "hi", "logit_bias": {"1": 101}}, 400, "logit_bias", "between -100 and 100"),
    ({"prompt": "x" * 20000}, 413, None, "larger than"),
]
for body, want_status, want_param, words in table:
    status, _, raw = request(port, "POST", "/v1/completions", body, auth)
    try:
        err = json.loads(raw)["error"]
    except (ValueError, KeyError):
        fail("%r: answer is not an OpenAI error: %r" % (body, raw[:200]))
    shown = str(body)[:60]
    check(status == want_status, "%s: status %d, want %d (%r)" % (shown, status, want_status, err))
    check(err.get("param") == want_param, "%s: param %r, want %r" % (shown, err.get("param"), want_param))
    check(words in err["message"], "%s: message %r lacks %r" % (shown, err["message"], words))
    check(err["type"] == "invalid_request_error", "%s: type %r" % (shown, err["type"]))
check(request(port, "DELETE", "/v1/completions", headers=auth)[0] == 405, "DELETE must be 405")
check(request(port, "GET", "/v2/anything", headers=auth)[0] == 404, "unknown path must be 404")
status, r = complete(port, {"prompt": "hi", "max_tokens": 2}, auth)
check(status == 200, "the server still works after the bad requests")
m = metrics(port)
check(m['gptj_requests_total{status="400"}'] >= len(table) - 1 and m['gptj_requests_total{status="401"}'] >= 4,
      "requests by status in /metrics")
print("%d bad requests refused as expected" % len(table))
PY
kill -TERM "$SERVER_PID"; wait_server_exit 30

# Queue limit: with room for 2 waiting choices, a burst of slow requests gets some 429s.
start_server "$GPTJ" serve --model "$MODEL" --port 0 --max-queued 2 --max-batch 1
python3 - "$PORT" <<'PY'
import sys, threading
from serverlib import *
port = int(sys.argv[1])
statuses = []
def go():
    statuses.append(complete(port, {"prompt": "hi", "max_tokens": 300, "temperature": 0})[0])
threads = [threading.Thread(target=go) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join(300)
check(sorted(set(statuses)) == [200, 429], "statuses %r: want some 200 and some 429" % statuses)
status, r = complete(port, {"prompt": "hi", "max_tokens": 1, "n": 3})
check(status == 429 and r["error"]["type"] == "rate_limit_error", "n=3 over a queue of 2: %d %r" % (status, r))
print("queue limit: %r" % sorted(statuses))
PY
echo PASS
