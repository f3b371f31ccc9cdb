#!/usr/bin/env bash
# Data-parallel vs tensor-parallel on one machine (issue 12's benchmark; not a test): the same
# `gptj batch` job — PROMPTS prompts of mixed lengths (random ids, 8..MAXLEN tokens), NEW greedy new
# tokens each — at np 1, np 2 as one TP-2 replica (--tp 2), and np 2 as two TP-1 replicas (--tp 1),
# and optionally np 4 as four TP-1 replicas (DP4=1), ROUNDS interleaved rounds. Prints one JSON
# line per run and a summary with the medians of generated tok/s and, for DP runs, the front-end's
# cost per dispatched request. Ratios inside one run of this script are what to quote.
# Usage: scripts/bench-dp.sh MODEL_DIR [ROUNDS]  (env: PROMPTS=256 NEW=32 MAXLEN=256 GPTJ=build/bin/gptj)
set -euo pipefail
MODEL=${1:?usage: $0 MODEL_DIR [ROUNDS]}
ROUNDS=${2:-3}
GPTJ=${GPTJ:-$(dirname "$0")/../build/bin/gptj}
PROMPTS=${PROMPTS:-256} NEW=${NEW:-32} MAXLEN=${MAXLEN:-256}
export OMPI_MCA_mpi_yield_when_idle=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 - "$PROMPTS" "$NEW" "$MAXLEN" > "$WORK/in.jsonl" <<'PY'
import json, random, sys
n, new, maxlen = map(int, sys.argv[1:])
rng = random.Random(12)
for i in range(n):
    length = rng.randint(8, maxlen)
    print(json.dumps({"id": i, "tokens": [rng.randrange(0, 50000) for _ in range(length)], "max_new_tokens": new}))
PY
layouts=("1 1" "2 2" "2 1")
[ -n "${DP4:-}" ] && layouts+=("4 1")
for round in $(seq "$ROUNDS"); do
  for layout in "${layouts[@]}"; do
    set -- $layout
    np=$1 tp=$2
    rm -f "$WORK/out.jsonl"
    if [ "$np" = 1 ]; then
      "$GPTJ" batch --model "$MODEL" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2> "$WORK/err"
    else
      mpirun --allow-run-as-root --oversubscribe -np "$np" "$GPTJ" batch --tp "$tp" --model "$MODEL" \
        --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2> "$WORK/err"
    fi
    python3 - "$WORK/err" "$np" "$tp" "$round" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", text)
f = re.search(r"\(([\d.]+) us per request dispatched\)", text)
print(json.dumps({"round": int(sys.argv[4]), "np": int(sys.argv[2]), "tp": int(sys.argv[3]),
                  "replicas": int(sys.argv[2]) // int(sys.argv[3]), "tokens": int(m.group(1)),
                  "seconds": float(m.group(2)), "tok_per_s": float(m.group(3)),
                  "frontend_us_per_request": float(f.group(1)) if f else None}))
PY
  done
done | tee "$WORK/runs.jsonl"
python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault((r["np"], r["tp"]), []).append(r)
base = statistics.median(r["tok_per_s"] for r in by[(1, 1)])
for (np, tp), rs in sorted(by.items()):
    med = statistics.median(r["tok_per_s"] for r in rs)
    fe = [r["frontend_us_per_request"] for r in rs if r["frontend_us_per_request"] is not None]
    print(json.dumps({"np": np, "tp": tp, "replicas": np // tp, "median_tok_per_s": med, "vs_np1": round(med / base, 3),
                      "median_frontend_us_per_request": statistics.median(fe) if fe else None, "rounds": len(rs)}))
PY
