#!/usr/bin/env bash
# The one-off subcommands as a user runs them: tokenize/detokenize (text and stdin), generate
# (greedy = golden tokens; clear errors), batch logprobs against Hugging Face's logits, make-random
# + logits on the result, bench JSON.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
a=$DATA/tiny-gptj-a/model
b=$DATA/tiny-gptj-b/model

[ "$("$GPTJ" tokenize --model "$a" --text "Hello world")" = "[15496,995]" ] || fail "tokenize --text"
[ "$(printf 'Hello world' | "$GPTJ" tokenize --model "$a")" = "[15496,995]" ] || fail "tokenize from stdin"
[ "$("$GPTJ" detokenize --model "$a" --tokens 15496,995)" = "Hello world" ] || fail "detokenize"
"$GPTJ" detokenize --model "$a" --tokens 15496,x 2> "$WORK/err" && fail "bad id accepted"
grep -q "'x' is not a token id" "$WORK/err" || fail "bad id message: $(cat "$WORK/err")"
echo "ok tokenize/detokenize"

# generate --tokens, greedy: the golden tokens of prompt 1 of tiny-gptj-b.
want=$(python3 -c "import json; print(','.join(map(str, json.load(open('$DATA/tiny-gptj-b/expected/greedy.json'))['results'][1]['new_tokens'][:12])))")
got=$("$GPTJ" generate --model "$b" --tokens "$(prompt tiny-gptj-b 1)" --max-new-tokens 12)
[ "$got" = "$want" ] || fail "generate: $got != golden $want"
"$GPTJ" generate --model "$a" --prompt "Hello" --max-new-tokens 4 --json > "$WORK/gen.json" || fail "generate --json"
python3 -c "import json; d = json.load(open('$WORK/gen.json')); assert d['completion_tokens'] == 4 and d['finish_reason'] == 'length', d" ||
  fail "generate --json output"
"$GPTJ" generate --model "$b" --prompt "Hello" 2> "$WORK/err" && fail "--prompt without tokenizer accepted"
grep -q "needs vocab.json and merges.txt" "$WORK/err" || fail "no-tokenizer message: $(cat "$WORK/err")"
echo "ok generate"

# Broken checkpoints and configs end in one line naming what is wrong, never in output: a header
# length off by one (2431 for the fixture's 2432), n_layer 1e9 or more layers than the checkpoint
# holds, and NaN weights (ln_f.weight[0]: every logit is NaN), which fail at step 1.
broken() {  # broken NAME PYTHON: a copy of tiny-gptj-a in $WORK/NAME, edited by PYTHON (cwd there)
  mkdir -p "$WORK/$1" && cp "$a"/* "$WORK/$1"/ && (cd "$WORK/$1" && python3 -c "$2") || fail "making $1"
}
expect_refusal() {  # expect_refusal MODEL NEEDLE: generate fails and its one line names NEEDLE
  "$GPTJ" generate --model "$WORK/$1" --prompt "Hello" --max-new-tokens 4 > "$WORK/$1.out" 2> "$WORK/$1.err" &&
    fail "$1 accepted: $(cat "$WORK/$1.out")"
  grep -qF "$2" "$WORK/$1.err" || fail "$1 message: $(cat "$WORK/$1.err")"
  [ ! -s "$WORK/$1.out" ] || fail "$1 printed output: $(cat "$WORK/$1.out")"
}
broken header2431 "
import struct; b = bytearray(open('model.safetensors', 'rb').read()); b[:8] = struct.pack('<Q', 2431)
open('model.safetensors', 'wb').write(b)"
expect_refusal header2431 "model.safetensors: the tensors cover"
for layers in 1000000000 3; do
  broken "layers$layers" "
import json; c = json.load(open('config.json')); c['n_layer'] = $layers; json.dump(c, open('config.json', 'w'))"
  expect_refusal "layers$layers" "config.json: field 'n_layer' = $layers"
done
broken nan_weights "
import json, struct; b = bytearray(open('model.safetensors', 'rb').read()); n = struct.unpack('<Q', b[:8])[0]
at = 8 + n + json.loads(b[8:8 + n])['transformer.ln_f.weight']['data_offsets'][0]
b[at:at + 4] = struct.pack('<f', float('nan')); open('model.safetensors', 'wb').write(b)"
expect_refusal nan_weights "step 1: the forward pass produced NaN or infinite logits"
echo "ok broken checkpoints and configs refused"

# batch with logprobs: the greedy first token's logprob and the top 3 equal log-softmax of Hugging
# Face's last-position logits over the ids the tokenizer can produce (50257 of the 50400 rows).
python3 -c "
import json
p = json.load(open('$DATA/gptj_prompts.json'))['models']['tiny-gptj-a']['prompts']
print(json.dumps({'id': 'lp', 'tokens': p[2], 'max_new_tokens': 3, 'logprobs': 3}))
print(json.dumps({'id': 'plain', 'tokens': p[2], 'max_new_tokens': 3}))" > "$WORK/lp_in.jsonl"
"$GPTJ" batch --model "$a" --input "$WORK/lp_in.jsonl" --output "$WORK/lp_out.jsonl" 2>/dev/null || fail "batch logprobs"
python3 - "$WORK/lp_out.jsonl" "$DATA/tiny-gptj-a/expected/logits_last.f32.bin" <<'PY' || fail "batch logprobs values"
import array, json, math, sys
rows = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
ref = array.array("f"); ref.frombytes(open(sys.argv[2], "rb").read())
vocab = len(ref) // 4
logits = ref[2 * vocab: 2 * vocab + 50257]  # prompt 2, allowed ids only
m = max(logits); norm = m + math.log(sum(math.exp(v - m) for v in logits))
best = sorted(range(len(logits)), key=lambda i: -logits[i])[:3]
lp = rows["lp"]
assert lp["tokens"][0] == best[0], (lp["tokens"], best)
assert abs(lp["token_logprobs"][0] - (logits[best[0]] - norm)) < 1e-4, (lp["token_logprobs"][0], logits[best[0]] - norm)
assert [t for t, _ in lp["top_logprobs"][0]] == best, (lp["top_logprobs"][0], best)
assert all(abs(v - (logits[t] - norm)) < 1e-4 for t, v in lp["top_logprobs"][0])
assert len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 3
assert "token_logprobs" not in rows["plain"] and rows["plain"]["tokens"] == lp["tokens"]
print("ok batch logprobs:", lp["token_logprobs"][0])
PY

# Scoring a prompt (max_new_tokens 0): each token's logprob given the ones before it.
p7=$(prompt tiny-gptj-a 1)
echo "{\"id\": \"score\", \"tokens\": [$p7], \"max_new_tokens\": 0, \"prompt_logprobs\": true, \"logprobs\": 2}" > "$WORK/score_in.jsonl"
"$GPTJ" batch --model "$a" --input "$WORK/score_in.jsonl" --output "$WORK/score_out.jsonl" 2>/dev/null || fail "batch scoring"
check prompt-logprobs "$WORK/score_out.jsonl" score "$DATA/tiny-gptj-a/expected/logits_p7_all.f32.bin" "$p7" 50257 ||
  fail "prompt logprobs"
# Prefix cache: the second of two identical 130-token prompts (run one at a time) takes the first's
# 8 full blocks (128 tokens) instead of recomputing them; its tokens equal those of a run without it.
python3 -c "
import json
p = json.load(open('$DATA/gptj_prompts.json'))['models']['tiny-gptj-a']['prompts'][3]
for i in ('x', 'y'): print(json.dumps({'id': i, 'tokens': p, 'max_new_tokens': 8}))" > "$WORK/prefix_in.jsonl"
"$GPTJ" batch --model "$a" --input "$WORK/prefix_in.jsonl" --output "$WORK/prefix_on.jsonl" --max-batch 1 \
  2> "$WORK/prefix_on.err" || fail "batch with the prefix cache"
grep -q "128 prompt tokens from the prefix cache" "$WORK/prefix_on.err" || fail "no prefix-cache reuse: $(cat "$WORK/prefix_on.err")"
"$GPTJ" batch --model "$a" --input "$WORK/prefix_in.jsonl" --output "$WORK/prefix_off.jsonl" --max-batch 1 \
  --no-prefix-cache 2> "$WORK/prefix_off.err" || fail "batch without the prefix cache"
grep -q " 0 prompt tokens from the prefix cache" "$WORK/prefix_off.err" || fail "--no-prefix-cache reused blocks"
python3 - "$WORK/prefix_on.jsonl" "$WORK/prefix_off.jsonl" <<'PY' || fail "prefix cache changed the tokens"
import json, sys
on, off = ({r["id"]: r["tokens"] for r in map(json.loads, open(p))} for p in sys.argv[1:])
assert on == off and len(on) == 2, (on, off)
PY
echo "ok prefix cache"
# ... the same when the prompt is prefilled in chunks of 3 tokens (chunked prefill).
"$GPTJ" batch --model "$a" --input "$WORK/score_in.jsonl" --output "$WORK/score_chunked.jsonl" --max-step-tokens 3 \
  2>/dev/null || fail "batch scoring, chunked"
check prompt-logprobs "$WORK/score_chunked.jsonl" score "$DATA/tiny-gptj-a/expected/logits_p7_all.f32.bin" "$p7" 50257 ||
  fail "prompt logprobs, chunked prefill"

# make-random in bfloat16, then logits through the KV cache equal the one-shot logits.
cat > "$WORK/cfg.json" <<'JSON'
{"model_type": "gptj", "vocab_size": 512, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4,
 "rotary_dim": 8, "n_inner": null, "layer_norm_epsilon": 1e-5, "bos_token_id": 0, "eos_token_id": 0}
JSON
"$GPTJ" make-random --config "$WORK/cfg.json" --output "$WORK/rnd" --seed 3 --dtype bfloat16 2>/dev/null || fail "make-random"
"$GPTJ" logits --model "$WORK/rnd" --tokens 1,2,3,4,5,6 --all-positions --output "$WORK/one.npy" || fail "logits"
"$GPTJ" logits --model "$WORK/rnd" --tokens 1,2,3,4,5,6 --all-positions --prefill 2 --output "$WORK/dec.npy" || fail "logits --prefill"
python3 - "$WORK/one.npy" "$WORK/dec.npy" <<'PY' || fail "prefill+decode logits differ from one-shot"
import array, sys
def load(p):
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[8:10], "little")
    a = array.array("f"); a.frombytes(raw[10 + n:]); return a
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == len(b) == 6 * 512
worst = 0.0
for x, y in zip(a, b):
    d = abs(x - y)
    if not d <= worst: worst = d
assert worst <= 1e-5, worst
print(f"ok make-random (bf16) + logits: prefill+decode vs one-shot max diff {worst:.2e}")
PY

# bench prints JSON lines with one all-reduce per layer.
"$GPTJ" bench --model "$b" --decode-batches 1,4 --steps 2 --prefill-tokens 8 --no-bandwidth > "$WORK/bench.jsonl" || fail "bench"
python3 - "$WORK/bench.jsonl" <<'PY' || fail "bench output"
import json, sys
# Numbers are plain decimals (118794.7, not 1.187947E5): every float as written has no exponent.
floats = []
rows = [json.loads(l, parse_float=lambda t: floats.append(t) or float(t)) for l in open(sys.argv[1])]
assert floats and not [t for t in floats if "e" in t.lower()], [t for t in floats if "e" in t.lower()]
decode = [r for r in rows if r["what"] == "decode"]
assert [r["batch"] for r in decode] == [1, 4] and all(r["all_reduces_per_layer"] == 1 for r in decode), rows
assert any(r["what"] == "peak_memory" for r in rows), rows
assert all(r["cpu_isa"] in ("avx2", "avx512", "avx512vnni", "avx512bf16") for r in decode), rows
print("ok bench JSON:", len(rows), "lines")
PY
# With the bandwidth probe: the batch-1 floor comes from the bandwidth probed around those steps.
"$GPTJ" bench --model "$b" --decode-batches 1 --steps 2 --prefill-tokens 8 > "$WORK/bench-bw.jsonl" || fail "bench (bandwidth)"
python3 - "$WORK/bench-bw.jsonl" <<'PY' || fail "bench bandwidth output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
[probe] = [r for r in rows if r["what"] == "memory_bandwidth"]
[b1] = [r for r in rows if r["what"] == "decode"]
assert probe["GB_per_s"] > 0 and b1["bandwidth_GB_per_s_around"] > 0, rows
floor = b1["weight_bytes_per_rank"] / 1e9 / b1["bandwidth_GB_per_s_around"] * 1e3
assert abs(b1["weight_read_floor_ms"] - floor) <= 1e-9 * floor, (b1, floor)
assert abs(b1["ratio_to_floor"] - b1["ms_per_step"] / floor) <= 1e-9 * b1["ratio_to_floor"], b1
print(f"ok bench floor from the bandwidth around batch 1: {b1['bandwidth_GB_per_s_around']:.1f} GB/s")
PY
# GPTJ_CPU_ISA: the lowest level can always be forced, and the bench and the launch log say so; an
# unknown name is one line listing the valid ones.
GPTJ_CPU_ISA=avx2 "$GPTJ" --log-level info bench --model "$b" --decode-batches 1 --steps 1 --prefill-tokens 8 --no-bandwidth \
  > "$WORK/bench_avx2.jsonl" 2> "$WORK/bench_avx2.err" || fail "bench at GPTJ_CPU_ISA=avx2"
grep -q '"cpu_isa":"avx2"' "$WORK/bench_avx2.jsonl" || fail "bench JSON lacks the forced level: $(cat "$WORK/bench_avx2.jsonl")"
grep -q "CPU kernels avx2" "$WORK/bench_avx2.err" || fail "launch log lacks the level: $(cat "$WORK/bench_avx2.err")"
GPTJ_CPU_ISA=sse9 "$GPTJ" generate --model "$b" --tokens 1,2 --max-new-tokens 1 > "$WORK/isa.out" 2> "$WORK/isa.err" &&
  fail "GPTJ_CPU_ISA=sse9 accepted"
grep -q "GPTJ_CPU_ISA=sse9: unknown level (valid: avx2, avx512, avx512vnni, avx512bf16)" "$WORK/isa.err" &&
  [ "$(wc -l < "$WORK/isa.err")" = 1 ] || fail "GPTJ_CPU_ISA=sse9 message: $(cat "$WORK/isa.err")"
echo "ok GPTJ_CPU_ISA"
# Threads per rank: OMP_NUM_THREADS when set, else the cores the process may run on.
threads() { python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin][-2]['threads_per_rank'])"; }
[ "$(OMP_NUM_THREADS=1 "$GPTJ" bench --model "$b" --decode-batches 1 --steps 1 --prefill-tokens 8 --no-bandwidth | threads)" = 1 ] ||
  fail "OMP_NUM_THREADS=1 not honoured"
if command -v taskset >/dev/null && [ "$(nproc --all)" -gt 1 ]; then
  [ "$(taskset -c 0 "$GPTJ" bench --model "$b" --decode-batches 1 --steps 1 --prefill-tokens 8 --no-bandwidth | threads)" = 1 ] ||
    fail "a process bound to one core must use one thread"
fi
echo "ok threads per rank"
echo PASS
