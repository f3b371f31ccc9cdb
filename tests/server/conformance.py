"""OpenAI conformance checks (run by conformance_test.sh against a server started with
--max-body-bytes 65536 --max-queued 2). Each check names what the spec requires."""
import sys
from serverlib import *

port = int(sys.argv[1])
messages = [{"role": "user", "content": "Name a color."}]


def chat(body):
    return post_json(port, "/v1/chat/completions", body)


def error_shape(err, what):
    check(isinstance(err, dict), "%s: no error object" % what)
    err = err if isinstance(err, dict) else {}
    for key in ("message", "type", "param", "code"):
        check(key in err, "%s: error.%s is required (got %r)" % (what, key, err))


# Completions: id, system_fingerprint.
status, r = complete(port, {"prompt": "Hello", "max_tokens": 3, "temperature": 0})
check(status == 200 and r["id"].startswith("cmpl-"), "completion id %r" % r.get("id"))
check(isinstance(r.get("system_fingerprint"), str) and r["system_fingerprint"], "completion system_fingerprint %r" % r)
fingerprint = r.get("system_fingerprint")

# logprobs: 0 still gives top_logprobs as an array (one entry per token).
status, r = complete(port, {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logprobs": 0})
lp = r["choices"][0]["logprobs"]
check(status == 200 and isinstance(lp["top_logprobs"], list), "logprobs 0: top_logprobs must be an array: %r" % lp)
check(len(lp["top_logprobs"] or []) == len(lp["tokens"]) == 3, "logprobs 0: one top_logprobs entry per token: %r" % lp)
check(all(isinstance(t, dict) for t in lp["top_logprobs"] or [None]), "logprobs 0: entries are objects: %r" % lp)

# Chat: chatcmpl- id, message.refusal null, logprobs.refusal null, system_fingerprint.
status, r = chat({"messages": messages, "max_tokens": 3, "temperature": 0, "logprobs": True, "top_logprobs": 1})
check(status == 200, "chat: %d %r" % (status, r))
check(r["id"].startswith("chatcmpl-"), "chat id %r must start chatcmpl-" % r["id"])
message = r["choices"][0]["message"]
check("refusal" in message and message["refusal"] is None, "chat message.refusal (null) is required: %r" % message)
logprobs = r["choices"][0]["logprobs"]
check("refusal" in logprobs and logprobs["refusal"] is None, "chat logprobs.refusal (null) is required: %r" % logprobs)
check(r.get("system_fingerprint") == fingerprint, "chat system_fingerprint %r" % r.get("system_fingerprint"))

# Streams: one id throughout, the fingerprint, usage null on every chunk but the last with
# include_usage (and no usage at all without it); chat chunk logprobs carry refusal.
for path, body in (("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0}),
                   ("/v1/chat/completions", {"messages": messages, "max_tokens": 4, "temperature": 0,
                                             "logprobs": True})):
    chunks, done = stream_path(port, path, dict(body, stream_options={"include_usage": True}))
    check(done and len(chunks) >= 3, "%s stream: %r" % (path, chunks))
    prefix = "chatcmpl-" if "chat" in path else "cmpl-"
    check(all(c["id"] == chunks[0]["id"] and c["id"].startswith(prefix) for c in chunks), "%s stream ids %r" % (path, [c["id"] for c in chunks]))
    check(all(c.get("system_fingerprint") == fingerprint for c in chunks), "%s stream system_fingerprint" % path)
    for c in chunks[:-1]:
        check("usage" in c and c["usage"] is None, "%s: with include_usage every chunk but the last has usage: null: %r" % (path, c))
    check(chunks[-1]["choices"] == [] and (chunks[-1].get("usage") or {}).get("completion_tokens") == 4, "%s usage chunk %r" % (path, chunks[-1]))
    if "chat" in path:
        with_lp = [c for c in chunks if c["choices"] and c["choices"][0]["logprobs"] is not None]
        check(with_lp, "chat stream with logprobs has logprobs")
        for c in with_lp:
            check("refusal" in c["choices"][0]["logprobs"] and c["choices"][0]["logprobs"]["refusal"] is None,
                  "chat chunk logprobs.refusal (null) is required: %r" % c)
    chunks, done = stream_path(port, path, body)
    check(done and all("usage" not in c for c in chunks), "%s: no usage without include_usage: %r" % (path, chunks))

# Models: created is the time the server loaded the model, not 0.
status, _, raw = request(port, "GET", "/v1/models")
models = json.loads(raw)
entry = models["data"][0]
check(status == 200 and isinstance(entry["created"], int) and entry["created"] > 1500000000, "Model.created %r" % entry)
status, _, raw = request(port, "GET", "/v1/models/" + entry["id"])
check(status == 200 and json.loads(raw) == entry, "/v1/models/ID %r != %r" % (raw, entry))

# Chat fields the server cannot honour: 400 naming the field; their "off" values are accepted.
tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
refused = [
    ({"tools": [tool]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"response_format": "text"}, "response_format"),
]
for extra, param in refused:
    status, r = chat(dict({"messages": messages, "max_tokens": 1}, **extra))
    check(status == 400, "%r must be refused with 400, got %d %r" % (extra, status, r))
    error_shape(r.get("error"), repr(extra))
    err = r.get("error") or {}
    check(err.get("param") == param and param in err.get("message", ""), "%r: the error must name %s: %r" % (extra, param, r))
for extra in ({"response_format": {"type": "text"}}, {"tools": []}, {"tool_choice": "none"},
              {"functions": []}, {"function_call": "none"}):
    status, r = chat(dict({"messages": messages, "max_tokens": 1}, **extra))
    check(status == 200, "%r is the default and must be accepted: %d %r" % (extra, status, r))

# Errors: every one carries error.code; 429 says when to retry.
status, r = complete(port, {"prompt": 5})
check(status == 400, "bad prompt: %d" % status)
error_shape(r["error"], "400 from the API")
status, headers, raw = request(port, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1, "n": 3})
check(status == 429, "n=3 over a queue of 2 must be 429: %d %r" % (status, raw))
error_shape(json.loads(raw)["error"], "429")
retry = headers.get("retry-after", "")
check(retry.isdigit() and int(retry) >= 1, "429 needs Retry-After (seconds): %r" % headers)

too_big = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 70000\r\n\r\n")  # refused on its headers, before the body
header_flood = raw_request_bytes("GET", "/v1/models", headers=[("X-Filler", "a" * 20000)])
for data, want, what in ((too_big, 413, "413 body too large"), (header_flood, 431, "431 headers too large"),
                         (b"NOT-HTTP\x01 nonsense\r\n\r\n", 400, "400 malformed request")):
    got = raw_exchange(port, data)
    check(len(got) == 1 and got[0].status == want, "%s: %r" % (what, got and (got[0].status, got[0].body)))
    error_shape(got[0].json().get("error"), what)

status, r = complete(port, {"prompt": "Hello", "max_tokens": 2})
check(status == 200, "the server still works: %d" % status)
print("conformance: ids, refusal, logprobs, stream usage, Model.created, system_fingerprint, %d refused chat fields, error codes, Retry-After ok" % len(refused))
