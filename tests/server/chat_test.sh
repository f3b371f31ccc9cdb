#!/usr/bin/env bash
# /v1/chat/completions on tiny-gptj-a: the reply equals a plain completion of the documented template
# (runtime/serve/chat_template.h), plain and streamed (role chunk first, deltas joined = the
# message); logprobs in chat's shape; the template's stop string; 400s naming the field.
source "$(dirname "$0")/common.sh" "$@"
start_server "$GPTJ" serve --model "$MODEL" --port 0
GPTJ_TEST_DATA="$DATA" python3 - "$PORT" <<'PY'
import sys
from serverlib import *
port = int(sys.argv[1])

def chat(body):
    return post_json(port, "/v1/chat/completions", body)

messages = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": [{"type": "text", "text": "Another "}, {"type": "text", "text": "one?"}]}]
rendered = "You are terse.\n\nUser: Name a color.\nAssistant: Blue.\nUser: Another one?\nAssistant:"
status, r = chat({"messages": messages, "max_tokens": 12, "temperature": 0})
check(status == 200 and r["object"] == "chat.completion", "chat: %d %r" % (status, r))
c = r["choices"][0]
check(c["message"]["role"] == "assistant" and c["finish_reason"] in ("length", "stop"), "chat choice %r" % c)
status, plain = complete(port, {"prompt": rendered, "max_tokens": 12, "temperature": 0, "stop": ["\nUser:"]})
check(status == 200 and plain["choices"][0]["text"] == c["message"]["content"],
      "chat reply %r != completion of the template %r" % (c["message"]["content"], plain["choices"][0]["text"]))
check(plain["choices"][0]["finish_reason"] == c["finish_reason"], "finish reasons differ")
check(r["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"], "usage counts the rendered prompt")

chunks, done = stream_path(port, "/v1/chat/completions", {"messages": messages, "max_tokens": 12, "temperature": 0, "stream": True})
check(done and chunks[0]["object"] == "chat.completion.chunk", "chat stream chunks %r" % chunks[:2])
check(chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, "first chunk names the role: %r" % chunks[0])
text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
check(text == c["message"]["content"], "streamed %r != %r" % (text, c["message"]["content"]))
check(chunks[-1]["choices"][0]["finish_reason"] == c["finish_reason"], "stream finish reason")

status, r = chat({"messages": messages, "max_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 2})
content = r["choices"][0]["logprobs"]["content"]
check(status == 200 and len(content) == r["usage"]["completion_tokens"], "chat logprobs %r" % r)
for item in content:
    check(item["logprob"] <= 0 and len(item["top_logprobs"]) == 2 and isinstance(item["bytes"], list), "entry %r" % item)
    check(abs(item["top_logprobs"][0]["logprob"] - item["logprob"]) < 1e-4, "greedy = top-1 (%r)" % item)

for body, param in [({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
                    ({"messages": [{"role": "user"}]}, "messages"), ({}, "messages"),
                    ({"messages": messages, "echo": True}, "echo"), ({"messages": messages, "top_logprobs": 2}, "top_logprobs")]:
    status, r = chat(body)
    check(status == 400 and r["error"]["param"] == param, "%r must be 400 naming %s: %d %r" % (body, param, status, r))
print("chat: template completion, stream, logprobs, 6 errors ok")
PY
echo PASS
