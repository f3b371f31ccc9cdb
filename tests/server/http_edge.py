"""HTTP edge cases over raw sockets (run by http_edge_test.sh against a server with the API key
argv[2]). Each check says what the HTTP RFCs or the API require."""
import sys
from serverlib import *

port, key = int(sys.argv[1]), sys.argv[2]
auth = [("Authorization", "Bearer " + key)]
plain = {"prompt": "Hello", "max_tokens": 6, "temperature": 0}
status, _, raw = request(port, "POST", "/v1/completions", plain, {"Authorization": "Bearer " + key})
check(status == 200, "plain completion: %d %r" % (status, raw))
want_text = json.loads(raw)["choices"][0]["text"]


def post(payload, version="HTTP/1.1", headers=None, host=True):
    return raw_request_bytes("POST", "/v1/completions", payload, (headers if headers is not None else auth), version, host)


def stream_text(body):
    events = sse_events(body)
    check(events and events[-1] == "[DONE]", "stream must end with [DONE]: %r" % events[-3:])
    return "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1] if json.loads(e)["choices"])


# Authorization: the scheme is case-insensitive (RFC 7235 §2.1); a wrong key is still refused.
for value, want in (("bearer " + key, 200), ("BEARER " + key, 200), ("Bearer  " + key, 200),
                    ("bearer wrong", 401), ("Basic " + key, 401), ("bearer", 401)):
    got = raw_exchange(port, raw_request_bytes("GET", "/v1/models", headers=[("Authorization", value)]))
    check(len(got) == 1 and got[0].status == want, "Authorization %r: want %d, got %r" % (value, want, got and got[0].status))

# Host: an HTTP/1.1 request needs exactly one (RFC 9112 §3.2); HTTP/1.0 may omit it.
got = raw_exchange(port, post(plain, host=False))
check(len(got) == 1 and got[0].status == 400, "HTTP/1.1 without Host must be 400: %r" % (got and got[0].status))
err = got[0].json().get("error") or {}
check("Host" in err.get("message", "") and "code" in err, "the 400 names Host: %r" % err)
got = raw_exchange(port, post(plain, headers=auth + [("Host", "127.0.0.1")]))
check(len(got) == 1 and got[0].status == 400, "two Host headers must be 400: %r" % (got and got[0].status))
got = raw_exchange(port, post(plain, version="HTTP/1.0", host=False))
check(len(got) == 1 and got[0].status == 200, "HTTP/1.0 without Host is fine: %r" % (got and got[0].status))
check(got[0].json()["choices"][0]["text"] == want_text, "HTTP/1.0 answer")

# HTTP/1.0 has no chunked coding: the stream is close-delimited, with Connection: close.
got = raw_exchange(port, post(dict(plain, stream=True), version="HTTP/1.0"))
check(len(got) == 1 and got[0].status == 200, "HTTP/1.0 stream: %r" % (got and got[0].status))
check(got and not got[0].header("Transfer-Encoding"), "HTTP/1.0 stream must not be chunked: %r" % got[0].headers)
check(got and [v.lower() for v in got[0].header("Connection")] == ["close"], "HTTP/1.0 stream needs Connection: close: %r" % (got and got[0].headers))
check(got and stream_text(got[0].body) == want_text, "HTTP/1.0 streamed text")
# ... while HTTP/1.1 streams stay chunked.
got = raw_exchange(port, post(dict(plain, stream=True)))
check(got and [v.lower() for v in got[0].header("Transfer-Encoding")] == ["chunked"], "HTTP/1.1 stream is chunked: %r" % (got and got[0].headers))
check(stream_text(got[0].body) == want_text, "HTTP/1.1 streamed text")

# A half-closed client (shutdown(SHUT_WR) after its request) still gets its answer: plain,
# streamed, and each of two pipelined requests.
got = raw_exchange(port, post(plain), shut_wr=True)
check(len(got) == 1 and got[0].status == 200, "half-closed client got no answer: %r" % got)
check(got and got[0].json()["choices"][0]["text"] == want_text, "half-closed plain answer")
got = raw_exchange(port, post(dict(plain, stream=True)), shut_wr=True)
check(len(got) == 1 and got[0].status == 200 and stream_text(got[0].body) == want_text, "half-closed stream: %r" % got)
second = dict(plain, prompt="Goodbye")
got = raw_exchange(port, post(plain) + post(second), shut_wr=True, count=2)
check(len(got) == 2 and [r.status for r in got] == [200, 200], "half-closed pipelined pair: %r" % [r.status for r in got])
check(got and got[0].json()["choices"][0]["text"] == want_text, "pipelined answers come in order")


# A client that pipelines a second request and then closes is gone: the first request is
# cancelled (its KV blocks freed long before max_tokens).
before = metrics(port)["gptj_generated_tokens_total"]
s = raw_connect(port)
s.sendall(post({"prompt": "hello", "max_tokens": 2000, "temperature": 0}))
wait_for_metrics(port, lambda m: m["gptj_running_sequences"] >= 1 and m["gptj_kv_blocks_used"] > 0, "the request to run")
s.sendall(post(plain))
s.close()
m = wait_for_metrics(port, lambda m: m["gptj_kv_blocks_used"] == 0 and m["gptj_running_sequences"] == 0, "KV blocks to be freed")
generated = m["gptj_generated_tokens_total"] - before
check(generated < 1900, "%d tokens generated: closing after a pipelined request did not cancel" % generated)

got = raw_exchange(port, post(plain))
check(len(got) == 1 and got[0].status == 200, "the server still works")
print("http edge: auth scheme, Host, HTTP/1.0 stream, half-close (plain, stream, pipelined), pipelined close (cancelled after %d tokens) ok" % generated)
