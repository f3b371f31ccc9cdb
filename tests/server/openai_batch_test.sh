#!/usr/bin/env bash
# OpenAI Batch files through the real `gptj batch` on tiny-gptj-a, against `gptj serve` over loopback:
#  1. a mixed file (completions, chat, n + seed + logprobs, echo scoring, logit_bias, a plain line, a
#     body the server refuses, a stream, a bad url, a repeated custom_id): every custom_id once; each
#     200/400 response body equals what the server answers for the same body (ids and timestamps
#     aside; floats within 1e-4, tokens exactly); errors name the field;
#  2. logit_bias +100 forces a token and -100 forbids the greedy one, in both line formats, also at
#     TP 2 and across data-parallel replicas (mpirun -np 2 --tp 2 and --tp 1);
#  3. --resume after a job cut mid-line: the torn line is cut, every custom_id exactly once, the
#     redone lines equal the first run's.
source "$(dirname "$0")/common.sh" "$@"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def line(cid, url, body, method="POST"):
    return {"custom_id": cid, "method": method, "url": url, "body": body}
C, CHAT = "/v1/completions", "/v1/chat/completions"
lines = [
    line("greedy", C, {"model": "model", "prompt": "Hello, my name is", "max_tokens": 8, "temperature": 0}),
    line("seeded", C, {"prompt": [[24584, 318], [464]], "max_tokens": 5, "temperature": 0.9, "top_p": 0.95, "n": 2,
                       "seed": 11, "logprobs": 2, "stop": ["zz"]}),
    line("chat", CHAT, {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 6, "temperature": 0,
                        "logprobs": True, "top_logprobs": 2}),
    line("score", C, {"prompt": "The capital of France", "max_tokens": 0, "echo": True, "logprobs": 1}),
    line("forced", C, {"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logit_bias": {"1820": 100}}),
    {"id": "plain", "prompt": "Hello", "max_new_tokens": 4, "logit_bias": {"1820": 100}},
    line("bad-temperature", C, {"prompt": "hi", "temperature": 7}),
    line("bad-bias", C, {"prompt": "hi", "logit_bias": {"x": 1}}),
    line("stream", C, {"prompt": "hi", "stream": True}),
    line("embeddings", "/v1/embeddings", {"input": "hi"}),
    line("greedy", C, {"prompt": "again"}),
]
with open(work + "/in.jsonl", "w") as f:
    for l in lines:
        f.write(json.dumps(l) + "\n")
PY
"$GPTJ" batch --model "$MODEL" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2>"$WORK/batch.err" \
  || { cat "$WORK/batch.err"; fail "gptj batch"; }
start_server "$GPTJ" serve --model "$MODEL" --port 0

GPTJ_TEST_DATA="$DATA" python3 - "$PORT" "$WORK" <<'PY'
import json, sys
from serverlib import *
port, work = int(sys.argv[1]), sys.argv[2]
inputs = [json.loads(l) for l in open(work + "/in.jsonl")]
out = [json.loads(l) for l in open(work + "/out.jsonl")]
check(len(out) == len(inputs), "one output line per input line: %d of %d" % (len(out), len(inputs)))
by_cid = {}
for o in out:
    if "custom_id" in o:
        check(o["id"].startswith("batch_req_"), "batch line id %r" % o["id"])
        by_cid.setdefault(o["custom_id"], []).append(o)

def same(a, b, where):
    """Equal JSON, floats within 1e-4; the answer's id and created are per request."""
    if isinstance(a, dict) and isinstance(b, dict):
        check(set(a) == set(b), "%s: keys %s != %s" % (where, sorted(a), sorted(b)))
        for k in a:
            if k not in ("id", "created"):
                same(a[k], b[k], where + "." + k)
    elif isinstance(a, list) and isinstance(b, list):
        check(len(a) == len(b), "%s: %d items != %d" % (where, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (where, i))
    elif isinstance(a, float) or isinstance(b, float):
        check(abs(a - b) <= 1e-4, "%s: %r != %r" % (where, a, b))
    else:
        check(a == b, "%s: %r != %r" % (where, a, b))

compared = 0
for l in inputs:
    if "custom_id" not in l or l["url"] == "/v1/embeddings" or l["body"] == {"prompt": "again"} or l["custom_id"] == "stream":
        continue  # not a request the server answers alike: a bad url, a repeat, a stream (the server streams it)
    got = [o for o in by_cid[l["custom_id"]] if o["response"] is not None][0]
    check(got["error"] is None and got["response"]["request_id"].startswith("req_"), "envelope %r" % got)
    status, answer = post_json(port, l["url"], l["body"])
    check(got["response"]["status_code"] == status, "%s: status %d, server %d" % (l["custom_id"], got["response"]["status_code"], status))
    same(got["response"]["body"], answer, l["custom_id"])
    compared += 1
check(compared == 7, "compared %d bodies" % compared)
b = lambda cid: [o for o in by_cid[cid] if o["response"] is not None][0]["response"]["body"]
check(b("greedy")["object"] == "text_completion" and b("greedy")["choices"][0]["finish_reason"] == "length", "greedy %r" % b("greedy"))
check(b("chat")["object"] == "chat.completion" and b("chat")["id"].startswith("chatcmpl-"), "chat %r" % b("chat"))
check(len(b("seeded")["choices"]) == 4, "2 prompts x n 2")
check(b("forced")["choices"][0]["token_ids"] == [1820] * 4, "logit_bias +100: %r" % b("forced")["choices"][0])
check(b("bad-temperature")["error"]["param"] == "temperature", "bad temperature %r" % b("bad-temperature"))
check(b("bad-bias")["error"]["param"] == "logit_bias", "bad bias %r" % b("bad-bias"))
check(by_cid["stream"][0]["response"]["status_code"] == 400 and b("stream")["error"]["param"] == "stream", "stream %r" % b("stream"))
emb = by_cid["embeddings"][0]
check(emb["response"] is None and "'url'" in emb["error"]["message"] and emb["line"] == 10, "bad url %r" % emb)
dup = [o for o in by_cid["greedy"] if o["response"] is None]
check(len(by_cid["greedy"]) == 2 and len(dup) == 1 and dup[0]["line"] == 11 and
      "duplicate custom_id: first seen on line 1" in dup[0]["error"]["message"], "dup %r" % by_cid["greedy"])
plain = [o for o in out if o.get("id") == "plain"][0]
check(plain["tokens"] == [1820] * 4 and plain["finish_reason"] == "length", "plain logit_bias %r" % plain)
print("ok: %d OpenAI batch bodies equal the server's answers; errors name their fields" % compared)

# -100 forbids the greedy token (the server, and plain + OpenAI lines at TP 2 below).
status, r = complete(port, {"prompt": "Hello", "max_tokens": 1, "temperature": 0})
greedy = r["choices"][0]["token_ids"][0]
status, r = complete(port, {"prompt": "Hello", "max_tokens": 1, "temperature": 0, "logit_bias": {str(greedy): -100}})
check(status == 200 and r["choices"][0]["token_ids"][0] != greedy, "logit_bias -100 still gave %d" % greedy)
with open(work + "/tp2.jsonl", "w") as f:
    f.write(json.dumps({"id": 1, "prompt": "Hello", "max_new_tokens": 3, "logit_bias": {str(greedy): -100}}) + "\n")
    f.write(json.dumps({"custom_id": "tp2", "method": "POST", "url": "/v1/completions",
                        "body": {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logit_bias": {"1820": 100}}}) + "\n")
open(work + "/greedy", "w").write(str(greedy))
PY

# TP 2: logit_bias applied on both ranks' shards; --tp 1 at np 2: sent to the other replica with the request.
for tp in 2 1; do
  timeout -k 5 120 mpirun --oversubscribe -np 2 "$GPTJ" batch --model "$MODEL" --tp "$tp" --input "$WORK/tp2.jsonl" \
    --output "$WORK/tp${tp}_out.jsonl" 2>"$WORK/tp$tp.err" || { cat "$WORK/tp$tp.err"; fail "mpirun -np 2 gptj batch --tp $tp"; }
  python3 - "$WORK" "$tp" <<'PY'
import json, sys
work, tp = sys.argv[1], sys.argv[2]
greedy = int(open(work + "/greedy").read())
out = {json.dumps(o.get("custom_id", o["id"])): o for o in map(json.loads, open(work + "/tp%s_out.jsonl" % tp))}
assert greedy != out["1"]["tokens"][0], (greedy, out["1"])
body = out['"tp2"']["response"]["body"]
assert body["choices"][0]["token_ids"] == [1820] * 3, body
assert body["system_fingerprint"] == "fp_cpu_float32_tp%s" % tp, body["system_fingerprint"]
print("ok: logit_bias at np 2 --tp %s (-100 forbids the greedy token, +100 forces one)" % tp)
PY
done

# --resume keyed by custom_id: keep 3 finished lines and half of the fourth, as a killed job leaves it.
head -n 3 "$WORK/out.jsonl" >"$WORK/resumed.jsonl"
sed -n 4p "$WORK/out.jsonl" | head -c 40 >>"$WORK/resumed.jsonl"
"$GPTJ" batch --model "$MODEL" --input "$WORK/in.jsonl" --output "$WORK/resumed.jsonl" --resume 2>"$WORK/resume.err" \
  || { cat "$WORK/resume.err"; fail "gptj batch --resume"; }
python3 - "$WORK" <<'PY'
import json, re, sys
work = sys.argv[1]
first = [json.loads(l) for l in open(work + "/out.jsonl")]
again = [json.loads(l) for l in open(work + "/resumed.jsonl")]
err = open(work + "/resume.err").read()
def failed(o):  # an error line, or a response the server refused
    return "error" in o and (o["error"] is not None or o["response"]["status_code"] != 200) if "custom_id" in o else "error" in o
redone = first[3:]
want = "%d lines written (%d errors), 3 skipped" % (len(redone), sum(map(failed, redone)))
assert want in err, (want, err)
assert again[:3] == first[:3], "the kept lines stay as they were"
def key(o):  # custom_id (and line, for error lines), or the plain id
    return json.dumps([o.get("custom_id"), o.get("line"), o.get("id") if "custom_id" not in o else None])
def tokens(o):
    body = o["response"]["body"] if o.get("response") else {}
    return [c.get("token_ids") for c in body.get("choices", [])] or None
a, b = {key(o): o for o in first}, {key(o): o for o in again}
assert len(a) == len(first) and len(b) == len(again) and set(a) == set(b), (sorted(a), sorted(b))
for k in a:
    x, y = a[k], b[k]
    if "custom_id" not in x:
        assert x == y, (x, y)
    elif tokens(x):
        assert tokens(x) == tokens(y), (k, tokens(x), tokens(y))
    else:  # an error line or a refused body: the same words
        assert json.dumps(x.get("error")) == json.dumps(y.get("error")) and (x["response"] or {}).get("body") == (y["response"] or {}).get("body"), (x, y)
print("ok: --resume by custom_id: every line once (" + want + "), redone lines equal the first run's")
PY
echo "PASS openai_batch_test"
