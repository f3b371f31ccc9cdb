#!/usr/bin/env bash
# The CPU kernel levels side by side on one machine (issue 15's per-level figures; not a test):
# build/bin/linear_bench for each FORMAT x ROWS on an IN x OUT product, once per level this CPU has
# (GPTJ_CPU_ISA forced), the levels interleaved within each round, ROUNDS rounds; then a table of the
# medians of each way's median per level, and each level's speed relative to avx2 ("auto": what the
# model runs). Quote ratios from one run of this script, with the machine.
# Usage: scripts/bench-levels.sh [ROUNDS]  (env: THREADS=2, IN=1024, OUT=4096, ROWS="1 8 32 128",
#        FORMATS="float32 float16 bfloat16 int8 int4", REPEATS=11, LEVELS (default: every level the CPU has),
#        BENCH=build/bin/linear_bench)
set -euo pipefail
ROUNDS=${1:-2}
HERE=$(dirname "$0")
BENCH=${BENCH:-$HERE/../build/bin/linear_bench}
THREADS=${THREADS:-2} IN=${IN:-1024} OUT=${OUT:-4096} ROWS=${ROWS:-1 8 32 128}
FORMATS=${FORMATS:-float32 float16 bfloat16 int8 int4} REPEATS=${REPEATS:-11}
if [ -z "${LEVELS:-}" ]; then
  # The CPU's best level: what linear_bench reports with nothing forced; then every level up to it.
  best=$("$BENCH" 1 8 8 float32 1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["cpu_isa"])')
  LEVELS=""
  for level in avx2 avx512 avx512vnni avx512bf16; do
    LEVELS="$LEVELS $level"
    [ "$level" = "$best" ] && break
  done
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for round in $(seq "$ROUNDS"); do
  for format in $FORMATS; do
    for rows in $ROWS; do
      for level in $LEVELS; do
        GPTJ_CPU_ISA=$level OMP_NUM_THREADS=$THREADS "$BENCH" "$rows" "$IN" "$OUT" "$format" "$REPEATS" \
          | sed "s/^{/{\"round\":$round,/" >> "$WORK/all.jsonl"
      done
    done
  done
done
python3 - "$WORK/all.jsonl" "$THREADS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
levels = list(dict.fromkeys(r["cpu_isa"] for r in rows))
ways = list(dict.fromkeys(r["way"] for r in rows))
print(f"\nms per product (median over rounds of each run's median), {sys.argv[2]} threads, "
      f"in {rows[0]['in']} out {rows[0]['out']}; in brackets: avx2's time / this level's")
print("| weights | rows | way | " + " | ".join(levels) + " |")
print("|---|---|---|" + "---|" * len(levels))
for fmt in dict.fromkeys(r["weights"] for r in rows):
    for n in dict.fromkeys(r["rows"] for r in rows):
        for way in ways:
            cells, base = [], None
            for level in levels:
                ms = [r["median_ms"] for r in rows if (r["weights"], r["rows"], r["way"], r["cpu_isa"]) == (fmt, n, way, level)]
                if not ms:
                    cells.append("")
                    continue
                m = statistics.median(ms)
                base = base or m
                cells.append(f"{m:.3f} ({base / m:.2f}x)" if level != levels[0] else f"{m:.3f}")
            if any(cells):
                print(f"| {fmt} | {n} | {way} | " + " | ".join(cells) + " |")
PY
