#!/usr/bin/env bash
# TP invariance under real mpirun: at np 1, 2 and 4 both fixture models give Hugging Face's logits
# (max abs error 1e-5; one-shot, and prefill 3 + decode through the KV cache) and its greedy tokens.
# Seeded sampling (temperature alone, top_k, top_p, penalties, n = 3) gives the same tokens at every TP
# size: draws are Gumbel-max races keyed by (seed, draw), merged from the ranks' vocab shards.
# Prompt scoring (prompt_logprobs) equals log-softmax of Hugging Face's logits at every TP size.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

for model in tiny-gptj-a tiny-gptj-b; do
  dir=$DATA/$model/model
  exp=$DATA/$model/expected
  p7=$(prompt $model 1)
  allowed=$(allowed_vocab "$dir")
  prompts_jsonl $model 32 > "$WORK/in.jsonl"
  prompts_jsonl $model 24 | python3 -c "
import json, sys
extra = [{'temperature': 1.0, 'seed': 5}, {'temperature': 0.8, 'top_k': 40, 'seed': 6},
         {'temperature': 1.2, 'top_p': 0.9, 'seed': 7, 'n': 3},
         {'temperature': 0.7, 'top_p': 0.95, 'repetition_penalty': 1.3, 'frequency_penalty': 0.5, 'seed': 8}]
for line, more in zip(sys.stdin, extra):
    print(json.dumps({**json.loads(line), **more}))" > "$WORK/sampled.jsonl"
  for np in 1 2 4; do
    echo "== $model at TP $np"
    mpi $np logits --model "$dir" --tokens "$p7" --all-positions --output "$WORK/p7.npy"
    check logits "$WORK/p7.npy" "$exp/logits_p7_all.f32.bin" 0 7
    mpi $np logits --model "$dir" --tokens "$p7" --all-positions --prefill 3 --output "$WORK/p7d.npy"
    check logits "$WORK/p7d.npy" "$exp/logits_p7_all.f32.bin" 0 7
    for i in 0 2 3; do
      mpi $np logits --model "$dir" --tokens "$(prompt $model $i)" --output "$WORK/last.npy"
      check logits "$WORK/last.npy" "$exp/logits_last.f32.bin" $i 1
    done
    mpi $np batch --model "$dir" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2>/dev/null
    check greedy "$WORK/out.jsonl" "$exp/greedy.json"
    echo "{\"id\": \"score\", \"tokens\": [$p7], \"max_new_tokens\": 1, \"prompt_logprobs\": true, \"logprobs\": 3}" > "$WORK/score.jsonl"
    mpi $np batch --model "$dir" --input "$WORK/score.jsonl" --output "$WORK/score_out.jsonl" 2>/dev/null
    check prompt-logprobs "$WORK/score_out.jsonl" score "$exp/logits_p7_all.f32.bin" "$p7" $allowed
    mpi $np batch --model "$dir" --input "$WORK/sampled.jsonl" --output "$WORK/sampled_$np.jsonl" 2>/dev/null
    python3 - "$WORK/sampled_1.jsonl" "$WORK/sampled_$np.jsonl" <<'PY'
import json, sys
def tokens(path):
    return {r["id"]: json.dumps(r.get("samples", r.get("tokens"))) for r in map(json.loads, open(path))}
a, b = tokens(sys.argv[1]), tokens(sys.argv[2])
assert len(a) == 4 and a == b, "seeded samples differ between TP 1 and this TP size: %s vs %s" % (a, b)
PY
  done
done
echo PASS
