#!/usr/bin/env bash
# Completions are prepared (parsed, tokenized, submitted) off the HTTP I/O threads, so slow ones
# never hold up GET /health. Two requests, as many as the server has I/O threads (--http-threads 2),
# each a 4 MB single-word prompt, are sent while GPTJ_SERVE_PREPARE_DELAY_MS makes every preparation
# take 6 s more: had the I/O threads prepared them, both would be busy and /health would wait > 6 s.
# /health must answer within 3 s throughout (a margin for this shared VM), and be probed while both requests are still pending.
# Both then get the context-length refusal, whose token count shows the prompts were tokenized.
# Last, a client that disconnects while its request waits to be prepared must cancel it.
source "$(dirname "$0")/common.sh" "$@"
GPTJ_SERVE_PREPARE_DELAY_MS=6000 start_server "$GPTJ" serve --model "$MODEL" --port 0 --http-threads 2 \
  --max-body-bytes 8000000
python3 - "$PORT" <<'PY'
import json, random, re, socket, sys, threading, time, http.client
from serverlib import *
port = int(sys.argv[1])
rng = random.Random(1)
WORD = 4_000_000
bodies = [json.dumps({"prompt": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(WORD // 8)) * 8,
                      "max_tokens": 1}) for _ in range(2)]
results, sent, errors = [None, None], [threading.Event(), threading.Event()], []

def post(i):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/completions", body=bodies[i], headers={"Content-Type": "application/json"})
        sent_at = time.monotonic()  # the whole body is on its way to the server
        sent[i].set()
        resp = conn.getresponse()
        results[i] = (resp.status, json.loads(resp.read()), time.monotonic() - sent_at)
        conn.close()
    except Exception as e:  # reported below
        errors.append("request %d: %r" % (i, e))
        sent[i].set()

threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
for t in threads: t.start()
for e in sent: check(e.wait(120), "a request body was not sent within 120 s")
probes, while_pending = [], 0
while any(t.is_alive() for t in threads):
    start = time.monotonic()
    status, _, _ = request(port, "GET", "/health", timeout=30)
    took = time.monotonic() - start
    check(status == 200, "/health answered %d under load" % status)
    probes.append(took)
    if all(r is None for r in results): while_pending += 1
    check(took < 3.0, "/health took %.1f s while two slow completions were being prepared" % took)
    time.sleep(0.2)
for t in threads: t.join(120)
check(not errors, "; ".join(errors))
check(while_pending >= 3, "only %d /health probes while both requests were pending" % while_pending)
for status, body, took in results:
    check(status == 400 and body["error"]["param"] == "prompt", "huge prompt: %d %r" % (status, body))
    tokens = int(re.search(r"\((\d+) in your prompt", body["error"]["message"]).group(1))
    check(tokens > WORD // 10, "the refusal counts %d prompt tokens for a 4 MB prompt" % tokens)
    check(took >= 5.5, "answered %.1f s after sending: GPTJ_SERVE_PREPARE_DELAY_MS had no effect" % took)
# A client that leaves while its request waits to be prepared cancels it: nothing is generated.
before = metrics(port)
s = socket.create_connection(("127.0.0.1", port), timeout=30)
body = json.dumps({"prompt": "hello", "max_tokens": 500, "temperature": 0}).encode()
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
time.sleep(1.0)
s.close()
time.sleep(7.0)  # past the 6 s delay, and time to generate many tokens had it been submitted
after = metrics(port)
check(after["gptj_generated_tokens_total"] == before["gptj_generated_tokens_total"],
      "a request whose client left during its preparation still generated %d tokens"
      % (after["gptj_generated_tokens_total"] - before["gptj_generated_tokens_total"]))
check(after["gptj_prompt_tokens_total"] == before["gptj_prompt_tokens_total"], "the left request was submitted")
# The server still works normally afterwards.
status, r = complete(port, {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
check(status == 200 and len(r["choices"][0]["token_ids"]) == 2, "small completion: %d %r" % (status, r))
print("/health: %d probes, %d while both were pending, slowest %.2f s" % (len(probes), while_pending, max(probes)))
PY
echo PASS
