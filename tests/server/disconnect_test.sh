#!/usr/bin/env bash
# A client that goes away mid-stream (or while waiting for a plain answer) cancels its request: the
# KV blocks return to the pool, and generation stops well before max_tokens.
source "$(dirname "$0")/common.sh" "$@"
start_server "$GPTJ" serve --model "$MODEL" --port 0
python3 - "$PORT" <<'PY'
import json, socket, sys, time
from serverlib import *
port = int(sys.argv[1])

def raw_post(payload):
    body = json.dumps(payload).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return s

for mode in ("stream", "plain"):
    before = metrics(port)["gptj_generated_tokens_total"]
    s = raw_post({"prompt": "hello", "max_tokens": 2000, "temperature": 0, "stream": mode == "stream"})
    if mode == "stream":
        got = b""
        while got.count(b"data: ") < 2:
            data = s.recv(4096)
            check(data, "stream ended early")
            got += data
        check(b"200 OK" in got.split(b"\r\n")[0], "stream status: %r" % got[:100])
    m = wait_for_metrics(port, lambda m: m["gptj_running_sequences"] >= 1 and m["gptj_kv_blocks_used"] > 0, "the request to run")
    s.close()
    m = wait_for_metrics(port, lambda m: m["gptj_kv_blocks_used"] == 0 and m["gptj_running_sequences"] == 0, "KV blocks to be freed")
    generated = m["gptj_generated_tokens_total"] - before
    check(generated < 1900, "%s: %d tokens generated: the disconnect did not cancel the request" % (mode, generated))
    print("%s disconnect: cancelled after %d tokens; KV blocks free again" % (mode, generated))
status, r = complete(port, {"prompt": "hello", "max_tokens": 3})
check(status == 200, "server works after the disconnects")
PY
echo PASS
