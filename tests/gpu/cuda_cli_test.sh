#!/usr/bin/env bash
# `--backend cuda` through the real binary, whatever the machine has:
#  - no GPU: a clear one-line error naming why, at np 1 and under mpirun -np 2 (every rank, no hang);
#  - a GPU: fp16 and bf16 logits of tiny-gptj-a within 2e-2 / 6e-2 of Hugging Face's, prefill 3 +
#    decode within 2e-2 too; a generation job answers every line; then np 2: with one GPU a clear
#    refusal naming the GPU count, with two TP 2 over NCCL within 2e-2 of Hugging Face and of TP 1.
# Exit 77 (ctest: skipped) only when this gptj was built without CUDA.
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
MODEL=$DATA/tiny-gptj-a/model
EXPECTED=$DATA/tiny-gptj-a/expected/logits_p7_all.f32.bin
P7=$(prompt tiny-gptj-a 1)

gpus=0
command -v nvidia-smi >/dev/null && gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
out=$(timeout 120 "$GPTJ" logits --backend cuda --dtype float16 --model "$MODEL" --tokens "$P7" \
  --all-positions --output "$WORK/p7.npy" 2>&1)
rc=$?
if grep -q "built without CUDA" <<<"$out"; then
  echo "SKIP: this gptj was built without CUDA: $out"
  exit 77
fi

if [ "$gpus" -eq 0 ] && [ "$rc" -ne 0 ]; then
  [ "$(wc -l <<<"$out")" -eq 1 ] || fail "expected one error line, got: $out"
  grep -q -- "--backend cuda: no CUDA device" <<<"$out" || fail "unclear error without a GPU: $out"
  start=$SECONDS
  out2=$(mpi 2 logits --backend cuda --model "$MODEL" --tokens "$P7" --output "$WORK/x.npy" 2>&1) &&
    fail "np 2 without a GPU succeeded"
  [ $((SECONDS - start)) -lt 60 ] || fail "np 2 without a GPU took $((SECONDS - start)) s"
  [ "$(grep -c -- "--backend cuda: no CUDA device" <<<"$out2")" -eq 2 ] || fail "not every rank said why: $out2"
  echo "no GPU visible: the CUDA backend refuses with '$out' (np 1 and np 2, $((SECONDS - start)) s)"
  echo PASS
  exit 0
fi
[ "$rc" -eq 0 ] || fail "gptj logits --backend cuda failed with $gpus GPU(s): $out"

check logits "$WORK/p7.npy" "$EXPECTED" 0 7 2e-2
timeout 120 "$GPTJ" logits --backend cuda --dtype bfloat16 --model "$MODEL" --tokens "$P7" --all-positions \
  --output "$WORK/p7_bf16.npy" || fail "bf16 logits"
check logits "$WORK/p7_bf16.npy" "$EXPECTED" 0 7 6e-2
timeout 120 "$GPTJ" logits --backend cuda --dtype float16 --model "$MODEL" --tokens "$P7" --all-positions \
  --prefill 3 --output "$WORK/p7_prefill3.npy" || fail "prefill 3 + decode"
check logits "$WORK/p7_prefill3.npy" "$EXPECTED" 0 7 2e-2
timeout 300 "$GPTJ" batch --backend cuda --model "$MODEL" --input "$DATA/../../examples/prompts.jsonl" \
  --output "$WORK/batch.jsonl" 2>/dev/null
[ "$(wc -l <"$WORK/batch.jsonl")" -eq "$(grep -c . "$DATA/../../examples/prompts.jsonl")" ] ||
  fail "batch on the GPU did not answer every line"

# np 2: over NCCL when the node has two GPUs; otherwise a clear refusal naming the GPU count.
if out2=$(mpi 2 logits --backend cuda --dtype float16 --model "$MODEL" --tokens "$P7" --all-positions \
  --output "$WORK/p7_tp2.npy" 2>&1); then
  check logits "$WORK/p7_tp2.npy" "$EXPECTED" 0 7 2e-2
  check logits "$WORK/p7_tp2.npy" "$WORK/p7.npy" 0 7 2e-2
  mpi 2 batch --backend cuda --model "$MODEL" --input "$DATA/../../examples/prompts.jsonl" \
    --output "$WORK/batch_tp2.jsonl" 2>/dev/null
  [ "$(wc -l <"$WORK/batch_tp2.jsonl")" -eq "$(wc -l <"$WORK/batch.jsonl")" ] || fail "TP 2 batch lines"
  echo "TP 2 over NCCL: logits and batch ok"
else
  grep -q "this node has only 1 visible GPU" <<<"$out2" || fail "np 2 failed without naming the GPU count: $out2"
  echo "one GPU: np 2 refused clearly"
fi
echo "PASS ($gpus GPU(s))"
