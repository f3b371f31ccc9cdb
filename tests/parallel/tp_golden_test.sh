#!/usr/bin/env bash
# TP invariance under real mpirun: at np 1, 2 and 4 both fixture models give Hugging Face's logits
# (max abs error 1e-5; one-shot, and prefill 3 + decode through the KV cache) and its greedy tokens.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

for model in tiny-gptj-a tiny-gptj-b; do
  dir=$DATA/$model/model
  exp=$DATA/$model/expected
  p7=$(prompt $model 1)
  prompts_jsonl $model 32 > "$WORK/in.jsonl"
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
  done
done
echo PASS
