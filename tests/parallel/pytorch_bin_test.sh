#!/usr/bin/env bash
# pytorch_model.bin checkpoints through the real binary, no conversion: tiny-gptj-b's weights as
# one .bin and as 5 shards + pytorch_model.bin.index.json give Hugging Face's logits (1e-5; all
# positions one-shot and through the KV cache, last positions) at TP 1 and 2 under mpirun, and its
# greedy tokens from `gptj generate`, `gptj batch` (np 2) and `gptj serve`. The evil-pickle fixture
# and a deflate-compressed copy of the archive are refused in one line, with nothing printed and
# /tmp/gptj-pwned never created.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
exp=$DATA/tiny-gptj-b/expected
p7=$(prompt tiny-gptj-b 1)
on() {  # on NP ARGS...: gptj alone at TP 1, under mpirun at more
  local np=$1
  shift
  if [ "$np" = 1 ]; then "$GPTJ" "$@"; else mpi "$np" "$@"; fi
}

for model in tiny-gptj-b-bin tiny-gptj-b-bin-sharded; do
  dir=$DATA/$model/model
  for np in 1 2; do
    echo "== $model at TP $np"
    on $np logits --model "$dir" --tokens "$p7" --all-positions --output "$WORK/p7.npy"
    check logits "$WORK/p7.npy" "$exp/logits_p7_all.f32.bin" 0 7
    on $np logits --model "$dir" --tokens "$p7" --all-positions --prefill 3 --output "$WORK/p7d.npy"
    check logits "$WORK/p7d.npy" "$exp/logits_p7_all.f32.bin" 0 7
    on $np logits --model "$dir" --tokens "$(prompt tiny-gptj-b 3)" --output "$WORK/last.npy"
    check logits "$WORK/last.npy" "$exp/logits_last.f32.bin" 3 1
  done
  want=$(python3 -c "import json; print(','.join(map(str, json.load(open('$exp/greedy.json'))['results'][1]['new_tokens'][:12])))")
  got=$("$GPTJ" generate --model "$dir" --tokens "$p7" --max-new-tokens 12)
  [ "$got" = "$want" ] || fail "$model: generate gave $got, golden $want"
  echo "ok $model: generate = golden tokens"
done

prompts_jsonl tiny-gptj-b 32 > "$WORK/in.jsonl"
mpi 2 batch --model "$DATA/tiny-gptj-b-bin-sharded/model" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2>/dev/null
check greedy "$WORK/out.jsonl" "$exp/greedy.json"

# gptj serve on the single .bin: a token-id completion gives the golden greedy tokens.
"$GPTJ" serve --model "$DATA/tiny-gptj-b-bin/model" --port 0 > "$WORK/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$WORK"' EXIT
port=
for _ in $(seq 1 300); do
  port=$(sed -n 's|^gptj serve: listening on http://.*:\([0-9][0-9]*\)$|\1|p' "$WORK/server.log")
  port=${port%%$'\n'*}
  [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health" || true)" = 200 ] && break
  kill -0 $server 2>/dev/null || fail "server exited: $(cat "$WORK/server.log")"
  sleep 0.1
done
curl -s --max-time 30 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"m\", \"prompt\": [$p7], \"max_tokens\": 12, \"temperature\": 0}" > "$WORK/completion.json"
python3 - "$WORK/completion.json" "$exp/greedy.json" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))
want = json.load(open(sys.argv[2]))["results"][1]["new_tokens"][:12]
assert got["choices"][0]["token_ids"] == want, (got, want)
print("ok serve: completion tokens = golden tokens")
PY

# Refusals: one line on stderr naming the file and the cause, nothing on stdout.
refused() {  # refused MODEL_DIR NEEDLE
  "$GPTJ" generate --model "$1" --tokens 1,2 --max-new-tokens 2 > "$WORK/refused.out" 2> "$WORK/refused.err" &&
    fail "$1 accepted: $(cat "$WORK/refused.out")"
  grep -qF "$2" "$WORK/refused.err" || fail "$1 message: $(cat "$WORK/refused.err")"
  [ "$(wc -l < "$WORK/refused.err")" = 1 ] || fail "$1: more than one line: $(cat "$WORK/refused.err")"
  [ ! -s "$WORK/refused.out" ] || fail "$1 printed output: $(cat "$WORK/refused.out")"
}
rm -f /tmp/gptj-pwned
refused "$DATA/evil-pickle/model" "evil-pickle/model/pytorch_model.bin: archive/data.pkl: pickle byte 2: pickle global 'posix.system' is not allowed"
[ ! -e /tmp/gptj-pwned ] || fail "the evil pickle ran: /tmp/gptj-pwned exists"
mkdir "$WORK/deflated" && cp "$DATA/tiny-gptj-b-bin/model/config.json" "$WORK/deflated/"
python3 - "$DATA/tiny-gptj-b-bin/model/pytorch_model.bin" "$WORK/deflated/pytorch_model.bin" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
PY
refused "$WORK/deflated" "deflated/pytorch_model.bin: entry 'pytorch_model/data.pkl' is compressed (zip method 8, deflate)"
echo "ok refusals"
echo PASS
