#!/usr/bin/env bash
# Data-parallel replicas under real mpirun (`gptj batch --tp N`): np 4 as --tp 2 (2 replicas) and
# --tp 1 (4 replicas), np 2 as --tp 1. On both fixture models the greedy lines equal Hugging Face's
# tokens; seeded sampled lines (n, top-k, top-p, penalties) equal np 1's token for token; prompt
# logprobs equal log-softmax of Hugging Face's logits. A 240-line job at DP 2 logs each replica's
# share and both did work. A --tp that does not divide the world, or n_head, and --tp on a command
# without replicas, are refused with one line on every rank.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

sampled_jsonl() {  # sampled_jsonl MODEL > file
  prompts_jsonl $1 12 | python3 -c "
import json, sys
extra = [{'temperature': 1.0, 'seed': 5, 'n': 2}, {'temperature': 0.8, 'top_k': 40, 'seed': 6},
         {'temperature': 1.2, 'top_p': 0.9, 'seed': 7, 'n': 3},
         {'temperature': 0.7, 'top_p': 0.95, 'repetition_penalty': 1.3, 'frequency_penalty': 0.5, 'seed': 8}]
for line, more in zip(sys.stdin, extra):
    print(json.dumps({**json.loads(line), **more}))"
}

for model in tiny-gptj-a tiny-gptj-b; do
  dir=$DATA/$model/model
  exp=$DATA/$model/expected
  p7=$(prompt $model 1)
  allowed=$(allowed_vocab "$dir")
  # One job per layout: the greedy lines (ids 0..3), the scoring line and the sampled lines ("s0"..).
  prompts_jsonl $model 32 > "$WORK/in.jsonl"
  sampled_jsonl $model | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line); d['id'] = 's%d' % d['id']; print(json.dumps(d))" > "$WORK/sampled.jsonl"
  echo "{\"id\": \"score\", \"tokens\": [$p7], \"max_new_tokens\": 1, \"prompt_logprobs\": true, \"logprobs\": 3}" > "$WORK/score.jsonl"
  cat "$WORK/in.jsonl" "$WORK/score.jsonl" "$WORK/sampled.jsonl" > "$WORK/all.jsonl"
  "$GPTJ" batch --model "$dir" --input "$WORK/sampled.jsonl" --output "$WORK/sampled_np1.jsonl" 2>/dev/null
  for layout in "2 1" "4 2" "4 1"; do
    set -- $layout
    np=$1 tp=$2
    echo "== $model at np $np --tp $tp ($((np / tp)) replicas)"
    rm -f "$WORK/out.jsonl"
    mpi $np batch --tp $tp --model "$dir" --input "$WORK/all.jsonl" --output "$WORK/out.jsonl" 2>/dev/null
    python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
lines = [json.loads(l) for l in open(work + "/out.jsonl")]
with open(work + "/greedy_out.jsonl", "w") as g, open(work + "/score_out.jsonl", "w") as sc, \
        open(work + "/sampled_dp.jsonl", "w") as sa:
    for d in lines:
        f = g if isinstance(d["id"], int) else sc if d["id"] == "score" else sa
        f.write(json.dumps(d) + "\n")
PY
    check greedy "$WORK/greedy_out.jsonl" "$exp/greedy.json"
    check prompt-logprobs "$WORK/score_out.jsonl" score "$exp/logits_p7_all.f32.bin" "$p7" $allowed
    python3 - "$WORK/sampled_np1.jsonl" "$WORK/sampled_dp.jsonl" <<'PY'
import json, sys
def tokens(path):
    return {r["id"]: json.dumps(r.get("samples", r.get("tokens"))) for r in map(json.loads, open(path))}
a, b = tokens(sys.argv[1]), tokens(sys.argv[2])
assert len(a) == 4 and a == b, "seeded samples differ between np 1 and data-parallel replicas: %s vs %s" % (a, b)
print("ok: 4 seeded sampled lines identical to np 1's")
PY
  done
done

# 240 lines at DP 2: the summary has a line per replica, and both replicas did work.
model=$DATA/tiny-gptj-b/model
prompts_jsonl tiny-gptj-b 8 240 > "$WORK/many.jsonl"
mpi 2 batch --tp 1 --model "$model" --input "$WORK/many.jsonl" --output "$WORK/many_out.jsonl" --max-batch 16 \
  2> "$WORK/many.err"
check ids-once "$WORK/many_out.jsonl" 240
python3 - "$WORK/many.err" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
lines = {int(r): int(n) for r, n in re.findall(r"gptj batch: replica (\d) \(ranks \d+\.\.\d+\): (\d+) lines", text)}
assert sorted(lines) == [0, 1], "no per-replica summary lines: %r" % text[-800:]
assert all(n >= 40 for n in lines.values()) and sum(lines.values()) == 240, "replica shares %r" % lines
print("replica shares of 240 lines:", lines)
PY

# Refusals: one line, every rank, before any weight is read.
set +e
mpi 4 batch --tp 3 --model "$model" --input "$WORK/in.jsonl" --output "$WORK/x.jsonl" 2> "$WORK/tp3.err"
code=$?
set -e
[ $code -ne 0 ] && [ $code -ne 124 ] || fail "--tp 3 at np 4: exit $code"
grep -q -- "--tp 3 does not divide the 4 ranks of the job into replicas" "$WORK/tp3.err" || { cat "$WORK/tp3.err"; fail "--tp 3 at np 4: no message"; }
set +e
mpi 3 batch --tp 3 --model "$model" --input "$WORK/in.jsonl" --output "$WORK/x.jsonl" 2> "$WORK/heads.err"
code=$?
set -e
[ $code -ne 0 ] && [ $code -ne 124 ] || fail "--tp 3 on 8 heads: exit $code"
grep -q "3 ranks cannot split the model's 8 attention heads" "$WORK/heads.err" || { cat "$WORK/heads.err"; fail "--tp 3 on 8 heads: no message"; }
set +e
mpi 2 logits --tp 1 --model "$model" --tokens 1,2,3 --output "$WORK/x.npy" 2> "$WORK/logits.err"
code=$?
set -e
[ $code -ne 0 ] && [ $code -ne 124 ] || fail "logits --tp 1 at np 2: exit $code"
grep -q "gptj logits runs one tensor-parallel group" "$WORK/logits.err" || { cat "$WORK/logits.err"; fail "logits --tp 1: no message"; }
echo PASS
