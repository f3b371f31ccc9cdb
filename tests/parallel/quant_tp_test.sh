#!/usr/bin/env bash
# Quantized weights (--weights int8 / int4) under real mpirun at TP 1, 2 and 4: each rank quantizes
# its own slices at load, and the logits stay within the format's stated limit of Hugging Face's
# (max abs error: int8 0.02, int4 0.3 — the limits of tests/golden/quant_golden_test.cc, which
# also checks mean error, KL and greedy tokens at TP 1). gptj batch runs with --weights int8 and its
# summary names the format; bench prints the format and bytes per rank; bad combinations get one line.
set -euo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"

for model in tiny-gptj-a tiny-gptj-b; do
  dir=$DATA/$model/model
  exp=$DATA/$model/expected
  p7=$(prompt $model 1)
  for np in 1 2 4; do
    for spec in "int8 0.02" "int4 0.3"; do
      set -- $spec
      echo "== $model at TP $np, --weights $1"
      mpi $np logits --model "$dir" --weights $1 --tokens "$p7" --all-positions --output "$WORK/p7.npy" 2>/dev/null
      python3 "$TOOLS/check.py" logits "$WORK/p7.npy" "$exp/logits_p7_all.f32.bin" 0 7 $2
      mpi $np logits --model "$dir" --weights $1 --quantize-lm-head --tokens "$(prompt $model 3)" \
        --output "$WORK/last.npy" 2>/dev/null
      python3 "$TOOLS/check.py" logits "$WORK/last.npy" "$exp/logits_last.f32.bin" 3 1 $2
    done
  done
done

# int8 x int8 products (--int8-activations) at TP 2: within quant_golden_test's limit for them.
for model in tiny-gptj-a tiny-gptj-b; do
  mpi 2 logits --model "$DATA/$model/model" --weights int8 --int8-activations --tokens "$(prompt $model 1)" \
    --all-positions --output "$WORK/a8.npy" 2>/dev/null
  python3 "$TOOLS/check.py" logits "$WORK/a8.npy" "$DATA/$model/expected/logits_p7_all.f32.bin" 0 7 0.03
done

dir=$DATA/tiny-gptj-b/model
prompts_jsonl tiny-gptj-b 8 > "$WORK/in.jsonl"
mpi 2 batch --model "$dir" --weights int8 --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2> "$WORK/batch.log"
python3 "$TOOLS/check.py" ids-once "$WORK/out.jsonl" 4
grep -q "gptj batch: weights int8 (lm_head float16), [0-9.]* MB per rank" "$WORK/batch.log" || { cat "$WORK/batch.log"; echo "FAIL: batch does not report the weight format"; exit 1; }

mpi 1 bench --model "$dir" --weights int4 --decode-batches 1 --steps 2 --prefill-tokens 8 --no-bandwidth > "$WORK/bench.jsonl" 2>/dev/null
grep -q '"weights":"int4 (lm_head float16)"' "$WORK/bench.jsonl" || { cat "$WORK/bench.jsonl"; echo "FAIL: bench does not name the weights"; exit 1; }
grep -q '"weight_bytes_per_rank":' "$WORK/bench.jsonl" || { echo "FAIL: bench lacks weight_bytes_per_rank"; exit 1; }

expect_one_line() {  # expect_one_line PATTERN args...: gptj fails and its error says PATTERN
  if "$GPTJ" "${@:2}" > "$WORK/err.out" 2> "$WORK/err.log"; then echo "FAIL: accepted: ${*:2}"; exit 1; fi
  grep -q -- "$1" "$WORK/err.log" || { cat "$WORK/err.log"; echo "FAIL: error does not say '$1'"; exit 1; }
}
expect_one_line "needs a CUDA GPU of compute capability 8.9" logits --model "$dir" --weights fp8 --tokens 1 --output "$WORK/x.npy"
expect_one_line "unknown --weights 'int3'" logits --model "$dir" --weights int3 --tokens 1 --output "$WORK/x.npy"
expect_one_line "needs --weights int8 or int4" logits --model "$dir" --quantize-lm-head --tokens 1 --output "$WORK/x.npy"
expect_one_line "int8-activations needs --weights int8 on the cpu backend" logits --model "$dir" --weights int4 --int8-activations --tokens 1 --output "$WORK/x.npy"
echo PASS
