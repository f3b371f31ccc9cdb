#!/usr/bin/env bash
# Weight formats side by side on one machine (issue 14's benchmark; not a test): `gptj bench` on the
# same 16-bit checkpoint with --weights auto (as stored), int8 and int4 (lm_head as stored), plus
# int8/int4 with --quantize-lm-head (format "int8+lm"), int8 with --int8-activations ("int8+a8",
# "int8+lm+a8"), --dtype bfloat16 compute ("bf16"); a suffix "@LEVEL" forces that CPU kernel level
# (GPTJ_CPU_ISA=LEVEL, e.g. "auto@avx2 auto@avx512bf16": levels side by side), ROUNDS interleaved rounds, each run with its own
# bandwidth probes (before loading, and around the batch-1 steps: the b1 bound uses those). Prints each run's JSON lines, then a table of medians: decode
# ms/step at each batch, prefill tok/s, weight bytes per rank (= bytes read per decode step, apart
# from the KV cache and the wte rows) and batch 1's ratio to that format's read bound
# (bytes / bandwidth of the same run). Quote ratios from one run of this script, with the machine.
# Usage: scripts/bench-quant.sh MODEL_DIR [ROUNDS] (env: NP=1 (mpirun ranks), BATCHES=1,8,32,
#        STEPS=8, FORMATS="auto int8 int4 int8+lm int4+lm", GPTJ=build/bin/gptj)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL_DIR [ROUNDS]}
ROUNDS=${2:-2}
GPTJ=${GPTJ:-$(dirname "$0")/../build/bin/gptj}
NP=${NP:-1} BATCHES=${BATCHES:-1,8,32} STEPS=${STEPS:-8}
FORMATS=${FORMATS:-auto int8 int4 int8+lm int4+lm int8+a8}
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for round in $(seq "$ROUNDS"); do
  for format in $FORMATS; do
    level=""
    [[ $format == *@* ]] && level=${format#*@}
    base=${format%%@*}
    base=${base%%+*}
    flags=(--weights "$base")
    # "bf16": --dtype bfloat16 compute (weights held in bfloat16, product inputs rounded to bfloat16).
    [ "$base" = bf16 ] && flags=(--dtype bfloat16)
    [[ $format == *+lm* ]] && flags+=(--quantize-lm-head)
    [[ $format == *+a8* ]] && flags+=(--int8-activations)
    run=("$GPTJ" bench --model "$MODEL" "${flags[@]}" --decode-batches "$BATCHES" --steps "$STEPS")
    [ "$NP" = 1 ] || run=(mpirun --oversubscribe -np "$NP" "${run[@]}")
    [ -n "$level" ] && run=(env GPTJ_CPU_ISA="$level" "${run[@]}")
    "${run[@]}" 2> "$WORK/err" | sed "s/^{/{\"format\":\"$format\",\"round\":$round,/" | tee -a "$WORK/all.jsonl" ||
      { cat "$WORK/err"; exit 1; }
  done
done
python3 - "$WORK/all.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    runs.setdefault(d["format"], []).append(d)
print("\n| format | cpu_isa | weights held | MB/rank | b1 ms | b1 / read bound | b8 ms | b32 ms | prefill tok/s | GB/s (probe around b1) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for fmt, lines in runs.items():
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    dec = lambda b, k: med([l[k] for l in lines if l["what"] == "decode" and l["batch"] == b and k in l])
    pre = med([l["tokens_per_s"] for l in lines if l["what"] == "prefill"])
    bw = dec(1, "bandwidth_GB_per_s_around")
    held = next(l["weights"] for l in lines if "weights" in l)
    mb = next(l["weight_bytes_per_rank"] for l in lines if "weight_bytes_per_rank" in l) / 1e6
    isa = next((l["cpu_isa"] for l in lines if "cpu_isa" in l), "?")
    print(f"| {fmt} | {isa} | {held} | {mb:.0f} | {dec(1, 'ms_per_step'):.2f} | {dec(1, 'ratio_to_floor'):.2f} | "
          f"{dec(8, 'ms_per_step'):.2f} | {dec(32, 'ms_per_step'):.2f} | {pre:.0f} | {bw:.1f} |")
PY
