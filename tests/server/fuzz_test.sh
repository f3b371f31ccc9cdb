#!/usr/bin/env bash
# Seeded random-bytes fuzz of the HTTP parser and the request validation: 300 random, garbled,
# truncated or type-scrambled requests over raw sockets. The server must never crash or hang: it
# answers /health and a real completion afterwards, and its KV blocks all come back.
source "$(dirname "$0")/common.sh" "$@"
start_server "$GPTJ" serve --model "$MODEL" --port 0 --max-body-bytes 65536
python3 - "$PORT" "${GPTJ_FUZZ_SEED:-20240611}" <<'PY'
import json, random, socket, sys, time
from serverlib import *
port, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)

def http(body, path="/v1/completions", method="POST", extra=b""):
    return (b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n" % (method.encode(), path.encode(), extra, len(body))) + body

def random_value(depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0: return None
    if kind == 1: return rng.random() < 0.5
    if kind == 2: return rng.randint(-2**63, 2**64 - 1)
    if kind == 3: return rng.random() * rng.choice([1, -1, 1e300])
    if kind == 4: return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(8)))
    if kind == 5: return rng.randrange(-3, 40)
    if kind == 6: return [random_value(depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7: return {rng.choice(FIELDS): random_value(depth + 1) for _ in range(rng.randrange(4))}
    return [rng.randrange(0, 50400) for _ in range(rng.randrange(1, 20))]

FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "n", "stream", "logprobs", "echo", "stop",
          "presence_penalty", "frequency_penalty", "seed", "user", "top_k", "repetition_penalty",
          "no_repeat_ngram_size", "model", "best_of", "stream_options", "suffix", "logit_bias"]

def case():
    kind = rng.randrange(5)
    if kind == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
    valid = http(json.dumps({"prompt": "hi", "max_tokens": 2}).encode())
    if kind == 1:  # garbled valid request
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            op, at = rng.randrange(3), rng.randrange(len(data))
            if op == 0: data[at] = rng.randrange(256)
            elif op == 1: data.insert(at, rng.randrange(256))
            else: del data[at]
        return bytes(data)
    if kind == 2:  # truncated
        return valid[:rng.randrange(len(valid))]
    if kind == 3:  # well-formed HTTP, scrambled JSON fields (generation kept short)
        body = {f: random_value() for f in rng.sample(FIELDS, rng.randrange(1, 8))}
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 8: body["max_tokens"] = 8
        body.setdefault("max_tokens", rng.choice([1, 2, "x", None, -1]))
        if isinstance(body.get("n"), int) and body["n"] > 2: body["n"] = 2
        return http(json.dumps(body).encode())
    # odd methods, paths, headers
    return http(b"{}", rng.choice(["/", "/v1/completions?x=1", "/%00", "/" + "a" * 3000, "/metrics", "*"]),
                rng.choice(["GET", "PUT", "BREW", "OPTIONS", "HEAD", "POST"]),
                rng.choice([b"", b"Expect: 100-continue\r\n", b"Transfer-Encoding: chunked\r\n", b"X: \x00\xff\r\n"]))

answered = 0
for i in range(300):
    data = case()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        if reply:
            answered += 1
            check(reply.startswith(b"HTTP/1.1 "), "case %d: not an HTTP answer: %r" % (i, reply[:80]))
    except socket.timeout:
        fail("case %d: no answer and no close within 10 s: %r" % (i, data[:120]))
    except OSError:  # reset, broken pipe, not connected: the server closed on garbage first
        pass
    finally:
        s.close()
status, _, _ = request(port, "GET", "/health")
check(status == 200, "/health after the fuzz run: %d" % status)
status, r = complete(port, {"prompt": "still alive?", "max_tokens": 3})
check(status == 200 and len(r["choices"][0]["token_ids"]) == 3, "completion after the fuzz run")
deadline = time.time() + 20
while metrics(port)["gptj_kv_blocks_used"] != 0:
    check(time.time() < deadline, "KV blocks still used after the fuzz run")
    time.sleep(0.05)
print("fuzz: 300 cases (seed %d), %d answered, server healthy" % (seed, answered))
PY
kill -0 "$SERVER_PID" || fail "server died"
echo PASS
