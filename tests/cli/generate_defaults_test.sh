#!/usr/bin/env bash
# gptj generate --n N prints every sample (sample k is seed + k), and a checkpoint's
# generation_config.json gives the defaults the command line leaves unset: temperature/top_k/top_p
# only with do_sample true, max_new_tokens, repetition_penalty, eos_token_id; a flag overrides the
# file; a bad field is refused naming the file and the field.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

a=$DATA/tiny-gptj-a/model
gen() { "$GPTJ" generate "$@" 2>"$WORK/err"; }
out=$(gen --model "$a" --prompt "Hello there" --max-new-tokens 5 --temperature 1 --top-p 0.9 --seed 3 --n 3)
[ "$(grep -c '^=== sample ' <<<"$out")" = 3 ] || fail "--n 3 did not print 3 samples: $out"
gen --model "$a" --prompt "Hello there" --max-new-tokens 5 --temperature 1 --top-p 0.9 --seed 3 --n 3 --json > "$WORK/n3.json"
gen --model "$a" --prompt "Hello there" --max-new-tokens 5 --temperature 1 --top-p 0.9 --seed 4 --json > "$WORK/s4.json"
python3 - "$WORK/n3.json" "$WORK/s4.json" <<'PY'
import json, sys
n3, s4 = (json.load(open(p)) for p in sys.argv[1:])
assert len(n3["samples"]) == 3 and all(len(s["tokens"]) == 5 for s in n3["samples"]), n3
assert n3["samples"][1]["tokens"] == s4["tokens"], "sample 1 of seed 3 is not seed 4's sample"
assert len({json.dumps(s["tokens"]) for s in n3["samples"]}) > 1, "the samples are all the same"
PY

# A copy of the peaked model (no tokenizer: tokens are printed as ids) with a generation_config.
m=$WORK/model
mkdir -p "$m" && cp "$DATA/tiny-gptj-b-peaked/model/"{config.json,model.safetensors} "$m/"
greedy=$(gen --model "$m" --tokens 932,17,5 --max-new-tokens 4)
echo '{"do_sample": false, "temperature": 5.0, "max_new_tokens": 4}' > "$m/generation_config.json"
[ "$(gen --model "$m" --tokens 932,17,5)" = "$greedy" ] || fail "do_sample false: temperature must be ignored"
echo '{"do_sample": true, "temperature": 1.0, "top_k": 1, "max_new_tokens": 4}' > "$m/generation_config.json"
[ "$(gen --model "$m" --tokens 932,17,5 --seed 1)" = "$greedy" ] || fail "top_k 1 from the file is not greedy"
[ "$(gen --model "$m" --tokens 932,17,5 --max-new-tokens 2)" = "$(cut -d, -f1-2 <<<"$greedy")" ] ||
  fail "--max-new-tokens must override the file"
second=$(cut -d, -f2 <<<"$greedy")
echo "{\"do_sample\": true, \"top_k\": 1, \"eos_token_id\": [$second, 7], \"max_new_tokens\": 4}" > "$m/generation_config.json"
gen --model "$m" --tokens 932,17,5 --json > "$WORK/eos.json"
python3 -c "import json,sys; d=json.load(open('$WORK/eos.json')); assert d['finish_reason']=='eos' and len(d['tokens'])<=2, d"
echo '{"do_sample": true, "top_p": 1.5}' > "$m/generation_config.json"
if gen --model "$m" --tokens 932,17,5; then fail "top_p 1.5 accepted"; fi
grep -q "generation_config.json: top_p" "$WORK/err" || fail "the error must name the file and the field: $(cat "$WORK/err")"
echo PASS
