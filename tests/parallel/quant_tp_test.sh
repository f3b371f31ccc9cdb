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
# A NaN in a checkpoint: --weights int8 refuses it at load, naming the tensor and the element (at TP 2,
# rank 1 holds rows 32.. of fc_in); --weights auto loads it as it is and the step refuses its NaN logits.
mkdir -p "$WORK/nan"
cp "$dir"/* "$WORK/nan/"
python3 - "$WORK/nan/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    info = json.loads(f.read(n))["transformer.h.1.mlp.fc_in.weight"]
    rows, cols = info["shape"]
    size = {"F32": 4, "F16": 2, "BF16": 2}[info["dtype"]]
    nan = {"F32": struct.pack("<I", 0x7FC00000), "F16": struct.pack("<H", 0x7E00), "BF16": struct.pack("<H", 0x7FC0)}
    f.seek(8 + n + info["data_offsets"][0] + (40 * cols + 5) * size)
    f.write(nan[info["dtype"]])
PY
if mpi 2 logits --model "$WORK/nan" --weights int8 --tokens 1 --output "$WORK/x.npy" > "$WORK/nan.out" 2>&1; then
  echo "FAIL: a NaN weight was quantized"; exit 1; fi
grep -q "transformer.h.1.mlp.fc_in.weight: weight \[40, 5\] is nan; cannot quantize a non-finite weight" "$WORK/nan.out" ||
  { cat "$WORK/nan.out"; echo "FAIL: the NaN's tensor and position are not named"; exit 1; }
if mpi 1 logits --model "$WORK/nan" --tokens 1 --output "$WORK/x.npy" > "$WORK/nan.out" 2>&1; then
  echo "FAIL: NaN logits were written"; exit 1; fi
grep -q "the forward pass produced NaN or infinite logits" "$WORK/nan.out" ||
  { cat "$WORK/nan.out"; echo "FAIL: --weights auto should load the checkpoint and refuse its NaN logits"; exit 1; }
echo PASS
